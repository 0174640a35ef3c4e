"""What the notebooks call instead of defining it themselves: the tutorial's toy embeddings and labelled tables,
the widget callbacks of the explorer and of the map browser, against values written out or computed here."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fnac_lab import analysis, viz  # noqa: E402

AXES = {"dog": 0, "car": 1, "piano": 2, "background": 3}


def test_unit_vector_is_the_nudged_axis_normalised():
    assert analysis.unit_vector("piano", axes=AXES).tolist() == [0.0, 0.0, 1.0, 0.0]
    v = analysis.unit_vector("dog", axes=AXES, extra=[(1, 0.2)])
    assert v.dtype == torch.float64
    assert v.tolist() == pytest.approx([1 / math.sqrt(1.04), 0.2 / math.sqrt(1.04), 0.0, 0.0], abs=1e-15)
    w = analysis.unit_vector("car", axes=AXES, extra=[(0, 0.2), (3, -0.1), (0, 0.1)])
    norm = math.sqrt(0.3 ** 2 + 1 + 0.1 ** 2)
    assert w.tolist() == pytest.approx([0.3 / norm, 1 / norm, 0.0, -0.1 / norm], abs=1e-15)


def test_toy_frame_cells_are_the_hand_written_vectors():
    frame = analysis.toy_frame({(0, 1): "car", (1, 0): "dog"}, axes=AXES)
    assert frame.shape == (4, 2, 2) and frame.dtype == torch.float64
    nudged = math.sqrt(1 + 0.3 ** 2)
    expected = {(0, 0): [0, 0, 0, 1], (0, 1): [0, 1 / nudged, 0, 0.3 / nudged],
                (1, 0): [1 / nudged, 0, 0, 0.3 / nudged], (1, 1): [0, 0, 0, 1]}
    for (r, c), cell in expected.items():
        assert frame[:, r, c].tolist() == pytest.approx(cell, abs=1e-15), (r, c)
    big = analysis.toy_frame({(2, 0): "piano"}, axes=AXES, nudge=0.5, size=3)
    assert big.shape == (4, 3, 3)
    assert big[:, 2, 0].tolist() == pytest.approx([0, 0, 1 / math.sqrt(1.25), 0.5 / math.sqrt(1.25)], abs=1e-15)
    assert int((big[3] == 1.0).sum()) == 8  # every other cell is background


def test_labelled_table_rounds_like_numpy_and_labels_rows_and_columns():
    gen = torch.Generator().manual_seed(0)
    matrix = torch.randn(3, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    matrix.data[0, 0] = -0.0001  # rounds to -0.0, shown as 0.0
    table = analysis.labelled_table(matrix, rows=["a", "b", "c"], cols=["w", "x", "y", "z"])
    assert list(table.index) == ["a", "b", "c"] and list(table.columns) == ["w", "x", "y", "z"]
    expected = np.round(matrix.detach().numpy(), 3)
    assert np.array_equal(table.to_numpy(), expected)
    assert not np.signbit(table.loc["a", "w"])
    square = analysis.labelled_table([[0.12345, 2], [3, 4.5555]], rows=["p", "q"], decimals=1)
    assert list(square.columns) == ["p", "q"]
    assert square.to_numpy().tolist() == [[0.1, 2.0], [3.0, 4.6]]


def _embedded(models=("FNAC", "NCE"), n_batches=2, b=4, c=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {name: [(F.normalize(torch.randn(b, c, 3, 3, generator=gen), dim=1),
                    F.normalize(torch.randn(b, c, generator=gen), dim=1)) for _ in range(n_batches)]
            for name in models}


def _heatmap_values(ax) -> np.ndarray:
    values = np.asarray(ax.collections[0].get_array())
    side = math.isqrt(values.size)
    return values.reshape(side, side)


def test_embedded_adjacency_is_batch_adjacency_of_that_batch():
    embedded = _embedded()
    img, aud = embedded["NCE"][1]
    got = analysis.embedded_adjacency(embedded, model="NCE", batch=1, tau=0.07, tne_threshold=0.4)
    want = analysis.batch_adjacency(img, aud, tau=0.07, tne_threshold=0.4)
    for name in analysis.MATRICES:
        assert torch.equal(getattr(got, name), getattr(want, name)), name


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("as_softmax", [True, False])
def test_explorer_draws_the_batch_adjacency_of_the_chosen_batch(soft, as_softmax):
    embedded = _embedded()
    labels = [torch.tensor([0, 1, 2, 3]), torch.tensor([3, 3, 1, 0])]
    explorer = viz.AdjacencyExplorer(embedded, labels=labels)
    fig = explorer.figure(model="FNAC", batch=1, tau=0.1, threshold=0.5, soft=soft, as_softmax=as_softmax)
    img, aud = embedded["FNAC"][1]
    adj = analysis.batch_adjacency(img, aud, tau=0.1, tne_threshold=None if soft else 0.5)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.collections and ax.get_title()]
    assert [ax.get_title() for ax in panels] == [viz.MATRIX_TITLES[n] for n in analysis.MATRICES]
    for ax, name in zip(panels, analysis.MATRICES):
        m = getattr(adj, name).double()
        expected = m.softmax(dim=1) if as_softmax else m
        np.testing.assert_allclose(_heatmap_values(ax), expected.numpy(), rtol=1e-6, atol=1e-9, err_msg=name)
        outlined = sorted(map(tuple, np.asarray(ax.collections[-1].get_offsets())))
        assert outlined == [(0.5, 1.5), (1.5, 0.5)]  # the two members of class 3, both ways round
    title = fig._suptitle.get_text()
    assert title.startswith(f"FNAC, batch 1, tau 0.1, TNE mask {'soft' if soft else '> 0.50'}, FN ratio 0.50")
    plt.close(fig)


def test_explorer_callback_works_as_an_interactive_widget():
    """``ipywidgets.interactive`` finds one control per keyword of the callback, draws on creation and redraws
    when a control moves; the callback returns nothing (the widget would display it a second time)."""
    import ipywidgets as widgets

    embedded = _embedded()
    explorer = viz.AdjacencyExplorer(embedded, labels=[torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 1])])
    plt.close("all")
    ui = widgets.interactive(explorer.show, model=widgets.Dropdown(options=list(embedded)),
                             batch=widgets.IntSlider(min=0, max=1, value=1),
                             tau=widgets.FloatLogSlider(value=0.1, base=10, min=-2.5, max=0),
                             threshold=widgets.FloatSlider(value=0.6, min=0.0, max=0.95),
                             soft=widgets.Checkbox(value=False), as_softmax=widgets.Checkbox(value=True))
    assert [w._kwarg for w in ui.kwargs_widgets] == ["model", "batch", "tau", "threshold", "soft", "as_softmax"]
    assert ui.result is None
    titles = [plt.figure(n)._suptitle.get_text() for n in plt.get_fignums()]
    assert len(titles) == 1 and titles[0].startswith("FNAC, batch 1, tau 0.1, TNE mask > 0.60, FN ratio 1.00")
    ui.kwargs_widgets[1].value = 0
    ui.kwargs_widgets[4].value = True
    titles = [plt.figure(n)._suptitle.get_text() for n in plt.get_fignums()]
    assert titles[-1].startswith("FNAC, batch 0, tau 0.1, TNE mask soft, FN ratio 0.00")
    ui.kwargs_widgets[2].value = 10 ** -2.5  # the title gives tau as the slider's ".3g" readout does
    assert plt.figure(plt.get_fignums()[-1])._suptitle.get_text().startswith("FNAC, batch 0, tau 0.00316, ")
    plt.close("all")


def _localised(n=6, models=("FNAC", "NCE"), seed=0):
    """Built-in samples and, per model, random maps and cIoUs in the shape :func:`analysis.localise` returns."""
    from types import SimpleNamespace

    from fnac_lab.data.builtin import BuiltinAVDataset, BuiltinSpec

    data = BuiltinAVDataset("test", n, seed=seed, spec=BuiltinSpec())
    gen = torch.Generator().manual_seed(seed)
    results = {name: SimpleNamespace(maps=torch.rand(n, 224, 224, generator=gen).numpy(),
                                     cious=torch.rand(n, generator=gen, dtype=torch.float64)) for name in models}
    return data, results


def _min_max(m):
    return (m - m.min()) / (m.max() - m.min())


def test_sample_grid_draws_each_chosen_sample_with_every_models_map():
    data, results = _localised()
    indices = np.array([4, 1, 3])  # as best_worst returns them
    fig = viz.sample_grid(data, results, indices=indices, title="three samples")
    axes = np.array(fig.axes[:9]).reshape(3, 3)  # rows: samples; columns: frame, FNAC, NCE (then the colour bar)
    assert len(fig.axes) == 10 and fig._suptitle.get_text() == "three samples"
    for row, i in zip(axes, indices):
        assert row[0].get_title() == data.class_name(int(data.labels[i]))
        assert np.array_equal(row[0].images[0].get_array(), data.images[i].permute(1, 2, 0).numpy())
        for ax, (name, r) in zip(row[1:], results.items()):
            assert ax.get_title() == f"{name} cIoU {float(r.cious[i]):.2f}"
            np.testing.assert_allclose(ax.images[1].get_array(), _min_max(r.maps[i]), rtol=1e-6)
    plt.close(fig)


def test_map_browser_shows_the_sample_at_the_chosen_position():
    import ipywidgets as widgets

    data, results = _localised()
    orders = {"split order": np.arange(6), "reversed": np.arange(6)[::-1]}
    browser = viz.MapBrowser(data, results=results, orders=orders)
    fig = browser.figure(order="reversed", position=2)  # position 1 is the first sample of the order
    assert fig._suptitle.get_text() == f"sample 4 ({data.ids[4]}), position 2 of 6"
    assert len(fig.axes) == 4  # frame, two maps, colour bar
    np.testing.assert_allclose(fig.axes[1].images[1].get_array(), _min_max(results["FNAC"].maps[4]), rtol=1e-6)
    plt.close(fig)
    plt.close("all")
    ui = widgets.interactive(browser.show, order=widgets.Dropdown(options=list(orders)),
                             position=widgets.IntSlider(min=1, max=6, value=1))
    assert [w._kwarg for w in ui.kwargs_widgets] == ["order", "position"] and ui.result is None
    ui.kwargs_widgets[1].value = 6
    assert plt.get_fignums() == []  # each figure went out as a JPEG and was closed


def _naive_objective(x: torch.Tensor, target: torch.Tensor | None, weight: float) -> torch.Tensor:
    """NCE over rows and columns plus ``weight`` times the mean absolute softmax-row difference, entry by entry."""
    n = x.shape[0]
    loss = 0.0
    for b in range(n):
        loss = loss - (x[b, b] - torch.log(sum(torch.exp(x[b, k]) for k in range(n)))) / n
        loss = loss - (x[b, b] - torch.log(sum(torch.exp(x[k, b]) for k in range(n)))) / n
    if weight:
        gap = 0.0
        for b in range(n):
            t_row = torch.exp(target[b]) / torch.exp(target[b]).sum()
            x_row = torch.exp(x[b]) / torch.exp(x[b]).sum()
            gap = gap + sum(abs(t_row[k] - x_row[k]) for k in range(n))
        loss = loss + weight * gap / n ** 2
    return loss


def _naive_adam(start: torch.Tensor, target, weight: float, *, steps: int, lr: float) -> torch.Tensor:
    """Adam (Kingma and Ba, 2015; beta 0.9, 0.999, eps 1e-8) written out, on the naive objective in float64."""
    x = start.clone()
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    for t in range(1, steps + 1):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(_naive_objective(x, target, weight), x)
        x = x.detach()
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad ** 2
        x = x - lr * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
    return x


@pytest.mark.parametrize("weight", [0.0, 100.0])
def test_descend_logits_is_adam_on_nce_plus_weighted_fns(weight):
    gen = torch.Generator().manual_seed(3)
    start = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    target = 3 * torch.randn(5, 5, generator=gen, dtype=torch.float64)
    got = analysis.descend_logits(start, fns_target=target if weight else None, fns_weight=weight, steps=12, lr=0.1)
    want = _naive_adam(start, target, weight, steps=12, lr=0.1)
    assert torch.allclose(got, want, atol=1e-9), (got - want).abs().max()
    assert _naive_objective(got, target, weight) < _naive_objective(start, target, weight)


def test_descend_logits_refuses_a_weight_without_a_target():
    with pytest.raises(ValueError, match="fns_target"):
        analysis.descend_logits(torch.zeros(3, 3), fns_weight=1.0)


def test_same_class_retrieval_figure_draws_the_curves_and_masses_given():
    rng = np.random.default_rng(0)
    retrieval, mass = {}, {}
    for i, name in enumerate(analysis.INTRA_MODAL):
        is_same = rng.random(60) < 0.3
        scores = rng.normal(size=60) + i * is_same
        retrieval[name] = analysis.pair_precision_recall(scores, is_same)
        mass[name] = {0.03: 0.1 * (i + 1), 0.3: 0.05 * (i + 2)}
    fig = viz.same_class_retrieval_figure(retrieval, mass)
    curves, bars = fig.axes
    lines = curves.get_lines()
    for line, (name, pr) in zip(lines, retrieval.items()):
        assert np.array_equal(line.get_xdata(), pr.recall) and np.array_equal(line.get_ydata(), pr.precision)
        assert line.get_label() == f"{name}: AP {pr.average_precision:.2f}"
    assert lines[-1].get_ydata()[0] == retrieval["audio"].base_rate == pytest.approx(retrieval["audio"].n_same / 60)
    heights = [patch.get_height() for patch in bars.patches]
    assert heights == [mass[name][0.03] for name in mass] + [mass[name][0.3] for name in mass]
    assert [t.get_text() for t in bars.get_xticklabels()] == list(analysis.INTRA_MODAL)
    assert fig.get_size_inches()[0] * fig.dpi <= 950
    plt.close(fig)


def test_model_comparison_says_which_model_scores_higher_and_whether_they_trained():
    table = pd.DataFrame({"audio": [0.61, 0.5], "visual": [0.2, 0.25]}, index=["FNAC", "NCE baseline"])
    lines = analysis.model_comparison(table, what="AP", columns={"audio": "audio", "visual": "visual"}, chance=0.125)
    assert lines == ["audio: AP 0.610 for FNAC against 0.500 for NCE baseline, FNAC higher by 0.110 (chance 0.125).",
                     "visual: AP 0.200 for FNAC against 0.250 for NCE baseline, FNAC lower by 0.050 (chance 0.125)."]
    untrained = table.rename(index=lambda m: m + " (untrained)")
    assert analysis.model_comparison(untrained)[-1].startswith("FNAC (untrained) and NCE baseline (untrained) are "
                                                               "untrained")
    assert analysis.untrained_note(["FNAC"]) is None
