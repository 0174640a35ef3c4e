"""Figures fit a 950-px notebook output area, share colour scales where they show one quantity, draw built-in
classes in their own colours and shapes, and saved notebooks carry plotly.js once."""

from __future__ import annotations

import base64
import gzip
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.io as pio  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from fnac_lab import viz  # noqa: E402
from fnac_lab.data.builtin import BuiltinSpec  # noqa: E402
from fnac_lab.viz.render import CARTESIAN_BUNDLE  # noqa: E402

OUTPUT_AREA_PX = 950


def matrices(b=8):
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(b, b, generator=g) for name in ("audio", "visual", "cross", "foreground")}


def history(epochs=3):
    keys = ["loss", "nce", "fns_audio", "fns_visual", "tne", "ap50", "mean_ciou", "auc", "fn_auroc_audio",
            "fn_auroc_visual", "fn_auroc_foreground"]
    return [{"epoch": e, **{k: 0.5 for k in keys}} for e in range(1, epochs + 1)]


def plotly_figures():
    labels = np.repeat(np.arange(4), 5)
    runs = {"FNAC": history(), "NCE baseline": history()}
    table = pd.DataFrame({"ap50": [0.5, 0.4], "mean_ciou": [0.4, 0.3]}, index=["FNAC", "NCE baseline"])
    return {
        "plotly_adjacency": viz.plotly_adjacency(matrices(), labels=[str(i) for i in range(8)]),
        "loss_curves": viz.loss_curves(runs, warmup_epochs=1),
        "validation_curves": viz.validation_curves(runs, levels={"centre": {"ap50": 0.1, "mean_ciou": 0.1, "auc": 0.1}}),
        "fn_auroc_curves": viz.fn_auroc_curves(runs),
        "scores_bars": viz.scores_bars(table),
        "embedding_scatter": viz.embedding_scatter({"a": np.random.rand(20, 2), "b": np.random.rand(20, 2)}, labels,
                                                   spec=BuiltinSpec()),
        "ablation_figure": viz.ablation_figure(pd.DataFrame({"ours: ap50": [0.1, 0.2]}, index=["1", "2"]), knob="k",
                                               title="t"),
    }


@pytest.mark.parametrize("name", list(plotly_figures()))
def test_plotly_figures_take_the_output_area_width(name):
    fig = plotly_figures()[name]
    assert fig.layout.width is None or fig.layout.width <= OUTPUT_AREA_PX, name
    assert {trace.type for trace in fig.data} <= viz.render.CARTESIAN_TRACES, name


def test_matplotlib_figures_fit_the_output_area():
    images = torch.zeros(3, 3, 64, 64, dtype=torch.uint8)
    maps = {"FNAC": torch.rand(3, 224, 224), "NCE baseline": torch.rand(3, 224, 224)}
    figures = [viz.adjacency_heatmaps(matrices(32), softmax=True),
               viz.adjacency_heatmaps({"a": torch.rand(4, 4), "b": torch.rand(4, 4), "c": torch.rand(4, 4)}),
               viz.localisation_grid(images, maps, boxes=[[0.1, 0.1, 0.5, 0.5]] * 3, title="best 3")]
    for fig in figures:
        width, _ = fig.get_size_inches()
        assert width <= viz.MAX_FIGURE_INCHES + 1e-9
        assert width * fig.dpi <= OUTPUT_AREA_PX


def test_adjacency_panels_each_have_their_own_colour_scale_over_the_off_diagonal_pairs():
    mats = matrices()
    fig = viz.plotly_adjacency(mats, same_class=torch.eye(8, dtype=torch.bool), labels=[f"c{i}" for i in range(8)])
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert [t.coloraxis for t in heatmaps] == ["coloraxis", "coloraxis2", "coloraxis3", "coloraxis4"]
    for trace, m in zip(heatmaps, mats.values()):
        off = m.numpy()[~np.eye(8, dtype=bool)]
        axis = fig.layout[trace.coloraxis]
        assert (axis.cmin, axis.cmax) == pytest.approx((off.min(), off.max())) and axis.colorbar.title.text
    assert len({round(fig.layout[t.coloraxis].colorbar.x, 3) for t in heatmaps}) == 2  # a bar beside each column
    assert heatmaps[0].text[2][5] == "row b 2: c2<br>column k 5: c5"
    marks = [t for t in fig.data if t.name == "same-class pair"]
    assert marks and all(t.marker.color == "#d62728" for t in marks)


def test_builtin_classes_are_drawn_in_their_own_colours_and_shapes():
    spec = BuiltinSpec()
    styles = viz.class_styles([0, 1, spec.n_colours, 5], spec=spec)
    assert styles[0].colour == "rgb({},{},{})".format(*spec.class_colour(0).astype(int))
    assert styles[0].name == spec.class_name(0) and styles[0].symbol == viz.SHAPE_SYMBOLS[spec.class_shape(0)]
    assert styles[0].symbol != styles[spec.n_colours].symbol and styles[0].colour == styles[spec.n_colours].colour
    fig = viz.embedding_scatter({"p": np.random.rand(4, 2)}, np.array([0, 1, spec.n_colours, 5]), spec=spec)
    assert [t.marker.color for t in fig.data] == [s.colour for s in styles.values()]


def test_the_notebook_renderer_carries_plotly_js_once(monkeypatch):
    shown = []
    monkeypatch.setattr("fnac_lab.viz.render.display_html", lambda html, raw: shown.append(html))
    viz.setup_notebook()
    renderer = pio.renderers["fnac_notebook"]
    renderer.activate()
    bundles = [pio.renderers._build_mime_bundle(fig.to_dict()) for fig in plotly_figures().values()]
    assert len(shown) == 1 and "cartesian bundle" in shown[0] and len(shown[0]) < 700_000
    packed = re.search(r'atob\("([A-Za-z0-9+/=]+)"\)', shown[0])[1]
    assert gzip.decompress(base64.b64decode(packed)) == CARTESIAN_BUNDLE.read_bytes()
    assert all(len(b["text/html"]) < 100_000 and "Plotly.newPlot" in b["text/html"] for b in bundles)
    assert all(re.search(r"fnacPlotlyReady \|\| Promise.resolve\(\)\).then\(function \(\) \{\s*window.PLOTLYENV",
                         b["text/html"]) for b in bundles)
    assert all("application/vnd.plotly.v1+json" in b for b in bundles)
    pio.renderers._build_mime_bundle({"data": [{"type": "scatter3d"}], "layout": {}})  # outside the cartesian bundle
    assert len(shown) == 2 and "full library" in shown[1]


def test_study_figures_draw_each_variant_in_its_methods_colour_with_its_interval():
    from fnac_lab.methods import METHODS

    gains = pd.DataFrame([
        {"class_bias_p": b, "variant": v, "method": m, "n": 5, "gain": g, "low": g - 0.1, "high": g + 0.05,
         "gains": "", "recovered": g / 0.2, "recovered_low": -9.0, "recovered_high": 1.5}
        for b in (0.5, 0.0) for v, m, g in (("FN elimination (k 1)", "fn_elimination", 0.1),
                                            ("Debiased NCE (tau_plus 0.05)", "debiased_nce", -0.04))])
    fig = viz.remedy_gain_figure(gains)
    assert fig.layout.width is None and {t.type for t in fig.data} <= viz.render.CARTESIAN_TRACES
    points = [t for t in fig.data if t.mode == "markers"]
    assert len(points) == 8  # each variant at each bias, in both panels
    for trace in points:
        row = gains[gains["variant"] == trace.y[0]].iloc[0]
        assert trace.marker.color == METHODS[row["method"]].colour
    gain_trace = next(t for t in points if t.y[0] == "FN elimination (k 1)" and t.xaxis == "x")
    assert gain_trace.x[0] == pytest.approx(0.1)
    assert (gain_trace.error_x.array[0], gain_trace.error_x.arrayminus[0]) == pytest.approx((0.05, 0.1))
    colours = {"FN elimination (k 1)": "#2ca02c"}
    detection = pd.DataFrame({"variant": "FN elimination (k 1)", "epoch": [1, 2], "fn_precision": [0.5, 0.6],
                              "fn_recall": [0.1, 0.2], "fn_detected_share": [0.01, 0.02], "same_class_share": 0.2})
    gaps = pd.DataFrame({"variant": "FN elimination (k 1)", "epoch": [1, 2], "gap": [0.0, 0.1], "low": [0.0, 0.0],
                         "high": [0.0, 0.2], "n": 5})
    for fig in (viz.detection_epoch_figure(detection, colours, warmup_epochs=1),
                viz.validation_gap_figure(gaps, colours, warmup_epochs=1)):
        assert fig.layout.width is None and {t.type for t in fig.data} <= viz.render.CARTESIAN_TRACES
        lines = [t for t in fig.data if t.name == "FN elimination (k 1)"]
        assert lines and all(t.line.color == "#2ca02c" for t in lines)


def test_precision_recall_curves_draw_each_model_in_its_colour_and_each_matrix_in_its_dash():
    from fnac_lab.analysis import pair_precision_recall

    rng = np.random.default_rng(0)
    is_same = rng.random(200) < 0.2
    pr = {m: pair_precision_recall(rng.random(200) + is_same * k, is_same) for m, k in (("audio", 1.0), ("visual", 0.2))}
    fig = viz.pr_curves({"FNAC": pr, "NCE baseline": pr})
    colours = viz.model_colours()
    for trace in fig.data:
        model, matrix = trace.name.split(" (AP")[0].split(": ")
        assert trace.line.color == colours[model]
        assert trace.line.dash == {"audio": "solid", "visual": "dash"}[matrix]
    assert colours["FNAC"] != colours["NCE baseline"]


def test_both_panels_of_an_ablation_figure_share_the_tables_order_of_values():
    from fnac_lab.ablate import paper_comparison
    from fnac_lab.paper import PaperTable

    ours = pd.DataFrame({"distance": ["l1", "l2"], "ap50": [0.3, 0.4]})
    paper = PaperTable(title="t", knob="distance", values=["l2", "smooth_l1", "l1"], columns={"cIoU": [1.0, 2.0, 3.0]})
    table = paper_comparison(ours, "distance", paper, metrics=["ap50"])
    fig = viz.ablation_figure(table, knob="distance", title="t")
    assert list(fig.layout.xaxis.categoryarray) == list(fig.layout.xaxis2.categoryarray) == ["l1", "l2", "smooth_l1"]
    paper_trace = next(t for t in fig.data if t.name.startswith("paper"))
    assert list(paper_trace.x) == ["l1", "l2", "smooth_l1"] and list(paper_trace.y) == [3.0, 1.0, 2.0]
    ours_trace = next(t for t in fig.data if t.name.startswith("ours"))
    assert list(ours_trace.y[:2]) == [0.3, 0.4] and np.isnan(ours_trace.y[2])


def test_map_figures_say_what_each_outline_is_and_edge_boxes_in_black():
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]])
    distractors = torch.tensor([[[0.6, 0.6, 0.9, 0.9]], [[-1.0, -1.0, -1.0, -1.0]]])
    fig = viz.localisation_grid(images, {"FNAC": torch.rand(2, 224, 224)}, boxes=boxes, distractor_boxes=distractors)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert labels == ["sounding object", "silent distractor", "map >= its median (the region cIoU scores)"]
    patches = [p for ax in fig.axes for p in ax.patches]
    assert len(patches) == 2 * 2 + 2  # both panels of row 1: box and distractor; of row 2: the box (no distractor)
    assert all(p.get_path_effects() for p in patches)
    truth = viz.localisation_grid(images, {}, ground_truth=torch.ones(2, 224, 224))
    assert [t.get_text() for legend in truth.legends for t in legend.get_texts()] == ["ground truth"]
    matplotlib.pyplot.close("all")


def test_confidence_histograms_share_one_x_range_and_one_bin_grid_without_blending():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"set": np.repeat(["positive", "silent", "off screen"], 20),
                          "confidence FNAC": np.r_[rng.uniform(0.5, 0.6, 30), rng.uniform(0.5, 0.55, 30)],
                          "confidence NCE baseline": rng.uniform(0.42, 0.52, 60)})
    fig = viz.confidence_histograms(table, ["FNAC", "NCE baseline"], threshold=0.5)
    assert fig.layout.barmode == "group" and all(t.opacity is None for t in fig.data)
    assert fig.layout.xaxis2.matches == "x" and tuple(fig.layout.xaxis.range) == tuple(fig.layout.xaxis2.range)
    low, high = fig.layout.xaxis.range
    assert low < 0.42 and high > 0.6  # both models' values, from 0.42 to 0.6, on the one range
    assert len({(t.xbins.start, t.xbins.size) for t in fig.data}) == 1


def test_paired_gains_of_two_class_biases_sit_apart_within_their_variants_row():
    gains = pd.DataFrame([{"class_bias_p": b, "variant": v, "n": 5, "gain": 0.1, "low": 0.0, "high": 0.2, "gains": ""}
                          for b in (0.0, 0.5) for v in ("A", "B", "C")])
    fig = viz.paired_gain_figure(gains)
    ticks = dict(zip(fig.layout.yaxis.ticktext, fig.layout.yaxis.tickvals))
    assert ticks == {"A": 2, "B": 1, "C": 0}  # the first variant on top
    for variant in "ABC":
        ys = [y for trace in fig.data for v, y in zip(trace.hovertext, trace.y) if v.startswith(f"{variant},")]
        assert len(ys) == 2 and ys[0] != ys[1] and all(abs(y - ticks[variant]) < 0.5 for y in ys)
