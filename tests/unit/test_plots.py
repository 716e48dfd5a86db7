"""Figures a reader can read: one colour and marker per model, the legend beside the axes (never over the data),
and a title that names the model set and the layer."""
from __future__ import annotations

import json

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from ssl_challenge.reporting.dc_vs_odc import time_to_accuracy_figure  # noqa: E402
from ssl_challenge.reporting.leaderboard import lowshot_figure, plot_lowshot  # noqa: E402
from ssl_challenge.reporting.plot_styles import line_styles  # noqa: E402

MODELS = ["random", "rot", "dc", "odc", "cls", "dc@e1", "odc@e1", "codc2@r1.dc", "codc2@r1.rot", "codc2@r1.concat",
          "codc3@r1.dc", "codc3@r1.rot", "codc3@r1.cls", "codc3@r1.concat", "codc2_self@r1.rot"]


def lowshot_evaluations(tmp_path, models):
    evaluations = {}
    for index, model in enumerate(models):
        per_k = {str(k): {"mean": 20.0 + index + k, "min": 19.0 + index + k, "max": 22.0 + index + k}
                 for k in (1, 2, 4, 8)}
        layers = []
        for layer, shift in (("feat4", -1.0 if index % 2 else 1.0), ("feat5", 0.0)):
            path = tmp_path / model / f"{layer}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            scored = {k: {key: value + shift for key, value in entry.items()} for k, entry in per_k.items()}
            path.write_text(json.dumps({"layer": layer, "per_k": scored,
                                        "track_score": sum(e["mean"] for e in scored.values()) / 4}))
            layers.append(str(path))
        evaluations[model] = {"voc07_lowshot": layers}
    return evaluations


def assert_legend_outside(figure, axis):
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legend, plot_area = axis.get_legend().get_window_extent(renderer), axis.get_window_extent(renderer)
    assert legend.x0 >= plot_area.x1, (legend, plot_area)  # entirely to the right of the axes
    assert not legend.overlaps(plot_area)


def test_line_styles_are_distinct_pairs_and_neighbours_differ_in_both():
    styles = line_styles(180)
    assert len(set(styles)) == 180
    assert all(a[0] != b[0] and a[1] != b[1] for a, b in zip(styles, styles[1:]))
    assert len({colour for colour, _ in line_styles(15)}) == 15  # 15 models: 15 colours, no repeat
    with pytest.raises(ValueError, match="181 lines"):
        line_styles(181)


def test_the_lowshot_figure_gives_15_models_15_styles_and_a_legend_beside_the_axes(tmp_path):
    figure = lowshot_figure(lowshot_evaluations(tmp_path, MODELS))
    axis = figure.axes[0]
    containers = axis.containers  # one error-bar container per model
    assert len(containers) == 15
    styles = [(to_hex(container.lines[0].get_color()), container.lines[0].get_marker()) for container in containers]
    assert len(set(styles)) == 15 and len({colour for colour, _ in styles}) == 15
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert labels[:3] == ["random (feat4)", "rot (feat5)", "dc (feat4)"]  # each model at its best layer, named
    assert_legend_outside(figure, axis)
    title = axis.get_title()
    assert "15 models" in title and "best layer" in title
    plt.close(figure)


def test_the_saved_lowshot_png_keeps_the_legend_beside_the_axes(tmp_path):
    from PIL import Image

    plot_lowshot(lowshot_evaluations(tmp_path, MODELS), tmp_path / "lowshot.png")
    width, height = Image.open(tmp_path / "lowshot.png").size
    assert width > 1.4 * height  # the axes and, beside them, the legend (not cut off by the figure's edge)


def test_a_lowshot_figure_without_results_says_so(tmp_path):
    figure = lowshot_figure({"rot": {"voc07_svm": []}})
    axis = figure.axes[0]
    assert axis.get_legend() is None and "no low-shot results" in [text.get_text() for text in axis.texts]
    assert "0 models" in axis.get_title()
    plt.close(figure)


def test_the_time_to_accuracy_figure_styles_each_model_and_names_them():
    points = {"dc": [(100.0, 40.0), (50.0, 30.0)], "odc": [(60.0, 45.0), (30.0, 35.0)], "odc_seed1": [(40.0, 41.0)]}
    figure = time_to_accuracy_figure(points)
    axis = figure.axes[0]
    lines = axis.get_lines()
    assert [line.get_label() for line in lines] == ["dc", "odc", "odc_seed1"]
    assert list(lines[0].get_xdata()) == [50.0, 100.0]  # sorted by time
    assert len({(to_hex(line.get_color()), line.get_marker()) for line in lines}) == 3
    assert_legend_outside(figure, axis)
    assert "dc, odc, odc_seed1" in axis.get_title() and "best layer" in axis.get_title()
    plt.close(figure)
