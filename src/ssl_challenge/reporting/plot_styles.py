"""What the figures share so that a reader can tell their lines apart: a distinct colour and marker per line, and
the legend beside the axes, never over the data. Torch-free; matplotlib is imported by the callers (Agg)."""
from __future__ import annotations

# 20 distinct colours (matplotlib's tab20: its 10 dark colours first, then their light partners, so that few lines
# get strong, different colours) and 9 markers. Line i gets colour i mod 20 and marker i mod 9; as 20 and 9 share
# no factor, the first 180 lines get distinct pairs, and lines next to each other differ in both.
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", "*"]


def line_styles(count: int) -> list[tuple[str, str]]:
    """(colour, marker) of ``count`` lines, distinct pairs for up to 180 lines."""
    if count > len(COLOURS) * len(MARKERS):
        raise ValueError(f"line_styles: {count} lines, at most {len(COLOURS) * len(MARKERS)} distinct styles")
    return [(COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]) for i in range(count)]


def legend_beside(axis, title: str | None = None):
    """The legend of ``axis`` to the right of it, outside the plotting area, in as many columns as it needs to stay
    within the figure's height (about 22 entries a column). Save with ``bbox_inches="tight"`` so it is kept."""
    handles, labels = axis.get_legend_handles_labels()
    if not handles:
        return None
    columns = 1 + (len(labels) - 1) // 22
    return axis.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                       fontsize=8, ncol=columns, title=title, title_fontsize=8, frameon=False)
