"""Training curves of one model from its metrics (``models/<model>/metrics.jsonl``, JSON lines written by the
training loop): the loss, ODC's/CODC's label change ratio and small-cluster events, the NMI between DC's
consecutive clusterings, and the cluster size histograms. One PNG per model, for the report.

Records (``engine.train``): ``kind: iteration`` (every few iterations: loss, lr and the method's per-iteration
logs) and ``kind: epoch`` (the epoch's means of those logs, plus the method's ``epoch_record``: cluster_sizes,
nmi_previous). Torch-free.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..core.io import atomic_path, read_jsonl

# (panel title, per-iteration/epoch key, y label); a CODC round logs the online clustering with an online_ prefix.
CHANGE_KEYS = ("label_change_ratio", "online_label_change_ratio")
SMALL_KEYS = ("small_clusters", "online_small_clusters")


def first_present(records: list[dict], keys: tuple[str, ...]) -> str | None:
    return next((key for key in keys if any(key in record for record in records)), None)


def small_cluster_events(epochs: list[dict], key: str) -> list[tuple[int, float]]:
    """Per epoch: the small clusters handled during it. The loop writes the epoch's mean per iteration; times the
    epoch's iterations (the difference of the cumulative ``iteration`` counts) it is the epoch's total."""
    events, previous = [], 0
    for record in epochs:
        iterations = record["iteration"] - previous
        previous = record["iteration"]
        if key in record:
            events.append((record["epoch"], round(record[key] * iterations, 6)))
    return events


def curves(records: list[dict]) -> dict:
    """The series the figure plots, from the metrics records (pure: tested on hand-made records)."""
    iterations = [r for r in records if r.get("kind") == "iteration"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    change_key, small_key = first_present(records, CHANGE_KEYS), first_present(records, SMALL_KEYS)
    sizes_key = first_present(records, ("cluster_sizes", "online_cluster_sizes"))  # DC/ODC's, else CODC's memory
    sized = [r for r in epochs if r.get(sizes_key)] if sizes_key else []
    return {
        "loss": [(r["iteration"], r["loss"]) for r in iterations if "loss" in r],
        "epoch_loss": [(r["iteration"], r["loss"]) for r in epochs if "loss" in r],
        "label_change_ratio": [(r["epoch"], r[change_key]) for r in epochs if change_key in r] if change_key else [],
        "small_cluster_events": small_cluster_events(epochs, small_key) if small_key else [],
        "nmi_previous": [(r["epoch"], r["nmi_previous"]) for r in epochs if r.get("nmi_previous") is not None],
        "cluster_sizes": {r["epoch"]: r[sizes_key] for r in sized},
    }


def not_recorded(axis) -> None:
    """A panel for a quantity the model's method does not record: the words, no empty axes to misread."""
    axis.text(0.5, 0.5, "not recorded for this model", ha="center", va="center", transform=axis.transAxes)
    axis.set_xticks([])
    axis.set_yticks([])


def plot_training_curves(metrics_path: str | Path, model: str, output_png: str | Path) -> dict:
    """Write the figure of ``model`` (six panels; a panel its method does not record says so) atomically;
    returns the plotted series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = curves(read_jsonl(metrics_path) if Path(metrics_path).stat().st_size else [])
    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    figure.suptitle(f"Training curves of the model {model} (its metrics.jsonl)")
    panels = [
        ("loss (per logged iteration; dots: epoch means)", "iteration", "loss", "loss"),
        ("label change ratio (epoch mean per iteration)", "epoch", "fraction of labels changed", "label_change_ratio"),
        ("small-cluster events per epoch", "epoch", "clusters refilled", "small_cluster_events"),
        ("NMI with the previous epoch's clustering", "epoch", "NMI", "nmi_previous"),
    ]
    for axis, (title, xlabel, ylabel, key) in zip(axes.flat, panels):
        axis.set_title(title, fontsize=9)
        points = series[key]
        if not points:
            not_recorded(axis)
            continue
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.plot(*zip(*points), marker="o" if len(points) < 30 else None)
        if key == "loss" and series["epoch_loss"]:
            axis.plot(*zip(*series["epoch_loss"]), "o", color="black", markersize=4)
    histograms = list(series["cluster_sizes"].items())
    for axis, (label, chosen) in zip(axes.flat[4:], [("first", histograms[:1]), ("last", histograms[-1:])]):
        axis.set_title(f"cluster sizes, {label} recorded epoch", fontsize=9)
        if not chosen:
            not_recorded(axis)
            continue
        epoch, sizes = chosen[0]
        axis.hist(sizes, bins=max(5, min(50, int(math.sqrt(len(sizes))) * 2)))
        axis.set_xlabel(f"samples per cluster (epoch {epoch}; {len(sizes)} clusters, {sum(1 for s in sizes if s == 0)} "
                        "empty)")
        axis.set_ylabel("clusters")
    figure.tight_layout()
    with atomic_path(output_png) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)
    return series
