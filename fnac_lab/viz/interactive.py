"""Interactive plotly figures: adjacency heatmaps, training curves, scores, embeddings, precision-recall and
ablations (the paired studies' figures are in :mod:`.studies`). None has a fixed width: each takes the width of its
output area (about 950 px in JupyterLab), and wide rows of panels wrap."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..data.builtin import BuiltinSpec
from ..methods import METHODS
from .styles import MATRIX_TITLES, ClassStyle, as_numpy, class_marker, class_styles, model_colours


def plotly_adjacency(matrices: Mapping[str, Any], *, same_class=None, labels: Sequence[str] | None = None,
                     softmax: bool = False, title: str | None = None) -> go.Figure:
    """Interactive heatmaps of ``[B, B]`` matrices (similarity / tau, or with ``softmax`` each row's softmax), each
    panel on its own colour scale with its own colour bar: the matrices compare different similarities (audio,
    frame-mean visual, cross-modal, foreground), whose ranges differ, and one shared scale leaves some panels a
    single colour. Each scale spans the panel's off-diagonal pairs (the diagonal, a clip with itself, would
    stretch it), values beyond it drawn at its ends. Hover names both members and their classes (``labels``);
    same-class pairs outlined in red; two panels a row beyond three."""
    names = list(matrices)
    cols = len(names) if len(names) <= 3 else 2
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[MATRIX_TITLES.get(n, n) for n in names],
                        horizontal_spacing=0.16, vertical_spacing=0.12)
    b = as_numpy(matrices[names[0]]).shape[0]
    text = None
    if labels is not None:
        text = [[f"row b {i}: {labels[i]}<br>column k {j}: {labels[j]}" for j in range(b)] for i in range(b)]
    mask = as_numpy(same_class) if same_class is not None else None
    off_diagonal = ~np.eye(b, dtype=bool)
    scale = "row softmax" if softmax else "similarity / tau"
    for p, name in enumerate(names):
        row, col = p // cols + 1, p % cols + 1
        m = torch.as_tensor(as_numpy(matrices[name]), dtype=torch.float64)
        if softmax:
            m = m.softmax(dim=1)
        z = m.numpy()
        axis = f"coloraxis{p + 1 if p else ''}"
        fig.add_trace(go.Heatmap(z=z, coloraxis=axis, text=text, name=MATRIX_TITLES.get(name, name),
                                 hovertemplate=("%{text}<br>" if text else "b %{y}, k %{x}<br>")
                                 + "value %{z:.3f}<extra>%{fullData.name}</extra>"),
                      row=row, col=col)
        if mask is not None:
            ii, jj = np.nonzero(mask)
            fig.add_trace(go.Scatter(x=jj, y=ii, mode="markers", name="same-class pair", showlegend=p == 0,
                                     legendgroup="same", hoverinfo="skip",
                                     marker=dict(symbol="square-open", color="#d62728", size=max(4, 300 // b),
                                                 line=dict(width=1.5))),
                          row=row, col=col)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{p + 1 if p else ''}", constrain="domain", row=row,
                         col=col, title_text="b (image)" if name == "cross" else "b", title_standoff=2)
        fig.update_xaxes(title_text="k (audio)" if name == "cross" else "k", title_standoff=2, row=row, col=col)
        x_domain = fig.layout[f"xaxis{p + 1 if p else ''}"].domain
        y_domain = fig.layout[f"yaxis{p + 1 if p else ''}"].domain
        values = z[off_diagonal] if b > 1 else z.ravel()
        fig.layout[axis] = dict(colorscale="Viridis", cmin=float(values.min()), cmax=float(values.max()),
                                colorbar=dict(x=x_domain[1] + 0.01, xanchor="left", y=sum(y_domain) / 2,
                                              len=(y_domain[1] - y_domain[0]) * 0.95, thickness=12,
                                              title=dict(text=scale, side="right")))
    fig.update_xaxes(constrain="domain")
    fig.update_layout(height=400 * rows + 70, margin=dict(t=90, l=30, r=30, b=40), autosize=True,
                      title=f"{title or ''}<br><sup>each panel on its own colour scale (its bar beside it), spanning "
                            f"its off-diagonal pairs</sup>",
                      legend=dict(orientation="h", y=-0.02, yanchor="top"))
    return fig


# -- training curves and scores -----------------------------------------------------------------------------------


def _epoch_axes(fig: go.Figure, histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Whole-epoch ticks (1, 2, ... or every k-th for long runs) on every x axis, titled "epoch"."""
    last = max((r["epoch"] for h in histories.values() for r in h), default=1)
    fig.update_xaxes(title_text="epoch", tickmode="linear", tick0=1, dtick=max(1, math.ceil(last / 10)))


def loss_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], *, warmup_epochs: int | None = None) -> go.Figure:
    """Mean training loss terms per epoch, one line per run (``histories``: run name -> metrics.jsonl records),
    three panels a row: the weighted total, then every registered method's terms that a run recorded, titled as the
    method titles them (:attr:`~fnac_lab.methods.Method.term_labels`)."""
    recorded = {k for history in histories.values() for r in history for k in r}
    labels = {k: v for cls in METHODS.values() for k, v in cls.term_labels.items() if k in recorded}
    terms = [("loss", "total (weighted)"), *labels.items()]
    cols = 3
    rows = math.ceil(len(terms) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for _, t in terms], horizontal_spacing=0.08,
                        vertical_spacing=0.18)
    for run, history in histories.items():
        epochs = [r["epoch"] for r in history]
        for p, (term, _) in enumerate(terms):
            if not history or term not in history[0]:
                continue
            fig.add_trace(go.Scatter(x=epochs, y=[r[term] for r in history], mode="lines+markers", name=run,
                                     legendgroup=run, showlegend=p == 0,
                                     line=dict(color=model_colours().get(run))), row=p // cols + 1, col=p % cols + 1)
    if warmup_epochs:
        for p in range(len(terms)):
            fig.add_vline(x=warmup_epochs + 0.5, line_dash="dot", line_color="grey", row=p // cols + 1,
                          col=p % cols + 1)
    _epoch_axes(fig, histories)
    fig.update_layout(height=300 * rows + 80, margin=dict(t=90), autosize=True,
                      title="Training loss terms<br><sup>mean over the epoch's batches; dotted: end of the NCE-only "
                            "warm-up</sup>")
    return fig


def validation_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], *, levels: Mapping[str, Mapping[str, float]] | None = None,
                      warmup_epochs: int | None = None) -> go.Figure:
    """Validation AP50 / mean cIoU / AUC per epoch, one line per run; ``levels`` (name -> scores) as dashed lines."""
    metrics = [("ap50", "AP50"), ("mean_ciou", "mean cIoU"), ("auc", "AUC")]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in metrics])
    for run, history in histories.items():
        epochs = [r["epoch"] for r in history]
        for c, (key, _) in enumerate(metrics, start=1):
            fig.add_trace(go.Scatter(x=epochs, y=[r[key] for r in history], mode="lines+markers", name=run,
                                     legendgroup=run, showlegend=c == 1, line=dict(color=model_colours().get(run))),
                          row=1, col=c)
    for name, scores in (levels or {}).items():
        for c, (key, _) in enumerate(metrics, start=1):
            fig.add_hline(y=scores[key], line_dash="dash", line_color="grey", annotation_text=name,
                          annotation_font_size=9, row=1, col=c)
    if warmup_epochs:
        for c in range(1, 4):
            fig.add_vline(x=warmup_epochs + 0.5, line_dash="dot", line_color="grey", row=1, col=c)
    _epoch_axes(fig, histories)
    fig.update_layout(height=360, autosize=True, margin=dict(t=90),
                      title="Validation scores per epoch<br><sup>test-split reference levels dashed</sup>")
    return fig


def fn_auroc_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], *, warmup_epochs: int | None = None) -> go.Figure:
    """False-negative detection per epoch: the AUROC with which each intra-modal similarity (audio, visual,
    foreground) separates same-class from different-class validation pairs, one line per run; 0.5 is chance."""
    panels = [("fn_auroc_audio", "audio  aud aud^T"), ("fn_auroc_visual", "visual  v v^T"),
              ("fn_auroc_foreground", "foreground  f f^T")]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in panels], shared_yaxes=True)
    for run, history in histories.items():
        epochs = [r["epoch"] for r in history]
        for c, (key, _) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(x=epochs, y=[r.get(key) for r in history], mode="lines+markers", name=run,
                                     legendgroup=run, showlegend=c == 1, line=dict(color=model_colours().get(run))),
                          row=1, col=c)
            fig.add_hline(y=0.5, line_dash="dash", line_color="grey", row=1, col=c)
            if warmup_epochs:
                fig.add_vline(x=warmup_epochs + 0.5, line_dash="dot", line_color="grey", row=1, col=c)
    _epoch_axes(fig, histories)
    fig.update_yaxes(title_text="same-class AUROC", range=[0.4, 1.0], row=1, col=1)
    fig.update_layout(height=340, autosize=True, margin=dict(t=90),
                      title="False-negative detection on validation pairs<br><sup>0.5 dashed: chance</sup>")
    return fig


def scores_bars(table: pd.DataFrame, *, title: str = "Test scores beside the reference maps") -> go.Figure:
    """Grouped bars of a scores table (rows: models and reference maps; columns: metrics)."""
    fig = go.Figure()
    for row, values in table.iterrows():
        fig.add_trace(go.Bar(x=list(table.columns), y=values.values, name=str(row), text=[f"{v:.3f}" for v in values],
                             textposition="outside", marker_color=model_colours().get(str(row))))
    fig.update_layout(barmode="group", height=380, autosize=True, title=title, xaxis_title="metric",
                      yaxis=dict(range=[0, 1.1], title_text="score"), legend_title_text="model or map")
    return fig


#: Colours of the clips of the extended protocol: positives, silent and off-screen negatives.
SET_COLOURS = {"positive": "#2ca02c", "silent": "#7f7f7f", "off screen": "#ff7f0e"}


def confidence_histograms(table: pd.DataFrame, models: Sequence[str], *, threshold: float | None = None,
                          bins: int = 30) -> go.Figure:
    """Each model's per-clip confidence (the extended protocol's; ``table`` with ``set`` and ``confidence NAME``
    columns) as histograms of the positives, silent and off-screen clips side by side in each bin, one panel per
    model (two a row), every panel on one bin grid and one x range; ``threshold`` dashed."""
    cols = min(2, len(models))
    rows = math.ceil(len(models) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(models), shared_xaxes=True,
                        horizontal_spacing=0.08, vertical_spacing=0.16)
    values = np.concatenate([table[f"confidence {m}"].to_numpy() for m in models])
    lo, hi = float(values.min()), float(values.max())
    size = (hi - lo) / bins if hi > lo else 1.0
    for p, model in enumerate(models):
        row, col = p // cols + 1, p % cols + 1
        for name, colour in SET_COLOURS.items():
            part = table.loc[table["set"] == name, f"confidence {model}"]
            if part.empty:
                continue
            fig.add_trace(go.Histogram(x=part, name=name, legendgroup=name, showlegend=p == 0,
                                       marker_color=colour, xbins=dict(start=lo, end=hi + size, size=size),
                                       hovertemplate=f"{name}<br>confidence %{{x}}<br>%{{y}} clips<extra></extra>"),
                          row=row, col=col)
        if threshold is not None:
            fig.add_vline(x=threshold, line_dash="dash", line_color="black", row=row, col=col)
    fig.update_xaxes(title_text="confidence", range=[lo - size, hi + 2 * size])
    fig.update_xaxes(matches="x", selector=lambda axis: axis.plotly_name != "xaxis")  # zoom the panels together
    fig.update_yaxes(title_text="clips", col=1)
    note = f"; dashed: the confidence threshold {threshold}" if threshold is not None else ""
    fig.update_layout(barmode="group", bargap=0.15, height=340 * rows + 60, autosize=True, margin=dict(t=90),
                      title=f"Confidence per clip: positives against negatives<br><sup>confidence: the top quarter of "
                            f"the map, (cos + 1) / 2; a model that knows when nothing visible sounds keeps the negatives "
                            f"to the left{note}</sup>")
    return fig


# -- embeddings, precision-recall -----------------------------------------------------------------------------------


def embedding_scatter(projections: Mapping[str, np.ndarray], labels, *, class_names: Mapping[int, str] | None = None,
                      spec: BuiltinSpec | None = None, cols: int = 2, title: str | None = None) -> go.Figure:
    """2-D projections (panel title -> ``[N, 2]``) as scatter panels, each class in its
    :func:`~fnac_lab.viz.styles.class_styles` colour and marker (built-in classes: their own colour and shape,
    given the data's ``spec``), one legend entry per class below the panels."""
    names = list(projections)
    rows = -(-len(names) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.04, vertical_spacing=0.08)
    lab = as_numpy(labels)
    styles = class_styles(lab, spec=spec, names=class_names)
    for p, name in enumerate(names):
        xy = np.asarray(projections[name])
        for c, style in styles.items():
            sel = lab == c
            fig.add_trace(go.Scatter(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=style.name,
                                     legendgroup=style.name, showlegend=p == 0, marker=class_marker(style, 7),
                                     hovertemplate=f"{style.name}<extra></extra>"),
                          row=p // cols + 1, col=p % cols + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    legend_rows = math.ceil(len(styles) / 5)  # five 170-px entries a row fit the 950-px output area
    fig.update_layout(height=300 * rows + 100 + 30 * legend_rows, title=title, autosize=True,
                      margin=dict(t=80, l=20, r=20, b=30 + 30 * legend_rows), plot_bgcolor="#f4f4f4",
                      legend=dict(orientation="h", yanchor="top", y=-0.02, x=0, font=dict(size=11),
                                  itemsizing="constant", entrywidth=170))
    return fig


def class_scatter(table: pd.DataFrame, x: str, y: str, *, styles: Mapping[int, ClassStyle], label_column: str = "label",
                  hover_column: str | None = None, diagonal: bool = False, title: str | None = None) -> go.Figure:
    """One point per row of ``table`` at columns ``x``, ``y``, each class (``label_column``) in its style, one
    legend entry per class; ``diagonal`` draws the line y = x over [0, 1]."""
    fig = go.Figure()
    for c, style in styles.items():
        rows = table[table[label_column] == c]
        fig.add_trace(go.Scatter(x=rows[x], y=rows[y], mode="markers", name=style.name, marker=class_marker(style, 9),
                                 text=rows[hover_column] if hover_column else None,
                                 hovertemplate=f"{style.name}<br>{x} %{{x:.3f}}<br>{y} %{{y:.3f}}"
                                 + ("<br>%{text}" if hover_column else "") + "<extra></extra>"))
    if diagonal:
        fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="grey"))
    legend_rows = math.ceil(len(styles) / 5)  # below the plot, five 170-px entries a row: no legend to scroll
    fig.update_layout(height=480 + 30 * legend_rows, autosize=True, title=title, xaxis_title=x, yaxis_title=y,
                      plot_bgcolor="#f4f4f4", margin=dict(t=80, b=60 + 30 * legend_rows),
                      legend=dict(orientation="h", yanchor="top", y=-0.14, x=0, font=dict(size=11),
                                  itemsizing="constant", entrywidth=170))
    return fig


def pr_curves(curves: Mapping[str, Mapping[str, Any]], *,
              title: str = "Finding same-class pairs by intra-modal similarity") -> go.Figure:
    """Precision-recall curves (model -> matrix -> :class:`~fnac_lab.analysis.PairRetrieval`): each model in its
    colour (:func:`~fnac_lab.viz.styles.model_colours`), each matrix in its own dash, the base rate dotted."""
    fig = go.Figure()
    colours = model_colours()
    dashes = {}
    for model, by_matrix in curves.items():
        for matrix, pr in by_matrix.items():
            dash = dashes.setdefault(matrix, ("solid", "dash", "dot", "dashdot")[len(dashes) % 4])
            fig.add_trace(go.Scatter(x=pr.recall, y=pr.precision, mode="lines",
                                     line=dict(color=colours.get(model, "#7f7f7f"), dash=dash),
                                     name=f"{model}: {matrix} (AP {pr.average_precision:.2f})"))
    base = next(iter(next(iter(curves.values())).values())).base_rate
    fig.add_hline(y=base, line_dash="dot", line_color="grey", annotation_text=f"random score ({base:.2f})",
                  annotation_position="bottom right")
    fig.update_layout(height=420, autosize=True, title=title, xaxis_title="recall (share of same-class pairs found)",
                      yaxis_title="precision", yaxis=dict(range=[0, 1.05]))
    return fig


# -- ablations -------------------------------------------------------------------------------------------------------


def ablation_figure(table: pd.DataFrame, *, knob: str, title: str, ours_label: str = "this workbench") -> go.Figure:
    """Two panels for one knob, drawn from its comparison table (:func:`fnac_lab.ablate.paper_comparison`: one row
    per knob value, ``ours: metric`` and ``paper: column (%)`` columns): left our scores, right the paper's
    published figures, both over the table's values in the table's order (a value one side lacks is a gap)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[ours_label, "paper (published)"], horizontal_spacing=0.1)
    x = [str(v) for v in table.index]
    names = {"ap50": "AP50", "mean_ciou": "mean cIoU", "auc": "AUC", "baseline_ap50": "NCE twin AP50",
             "fn_ratio": "FN ratio"}
    for column in table.columns:
        side, name = column.split(": ", 1)
        if side == "ours":
            fig.add_trace(go.Scatter(x=x, y=table[column], mode="lines+markers", name=f"ours: {names.get(name, name)}"),
                          row=1, col=1)
        else:
            fig.add_trace(go.Scatter(x=x, y=table[column], mode="lines+markers", name=column, line=dict(dash="dash")),
                          row=1, col=2)
    if not any(c.startswith("paper: ") for c in table.columns):
        fig.add_annotation(text="no published numbers for this knob", showarrow=False, xref="x2 domain",
                           yref="y2 domain", x=0.5, y=0.5)
    fig.update_xaxes(title_text=knob, type="category", categoryorder="array", categoryarray=x)
    fig.update_yaxes(title_text="score (0-1)", row=1, col=1)
    fig.update_yaxes(title_text="cIoU (%)", row=1, col=2)
    fig.update_layout(height=400, autosize=True, title=title)
    return fig
