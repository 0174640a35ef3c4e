"""Figures for the notebooks: seaborn heatmaps of adjacency matrices, localisation maps over frames with their
boxes (matplotlib), and interactive plotly figures (curves, scores, embeddings, precision-recall, ablations).

Static figures return a matplotlib ``Figure``; interactive ones a plotly ``go.Figure``. Nothing here computes
a result: the numbers come from :mod:`fnac_lab.analysis` and the training outputs.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.patches as mpatches
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import seaborn as sns
import torch
from plotly.subplots import make_subplots

from .metrics import MAP_SIZE, binarise, vggss_box_to_pixels

MATRIX_TITLES = {
    "audio": "audio  A_aud",
    "visual": "visual  A_img",
    "cross": "cross-modal  logits",
    "foreground": "foreground  A_fg",
}
MODEL_COLOURS = {"FNAC": "#d62728", "NCE baseline": "#1f77b4"}


def setup_notebook(*, plotly_html: bool = True) -> None:
    """Seaborn theme for static figures; plotly figures rendered both as a JupyterLab mime bundle and as
    self-contained HTML (plotly.js embedded once), so they show in the lab and in ``nbconvert --to html``."""
    sns.set_theme(context="notebook", style="white")
    plt.rcParams["figure.dpi"] = 100
    if plotly_html:
        pio.renderers.default = "plotly_mimetype+notebook"


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# -- adjacency matrices ----------------------------------------------------------------------------------------------


def adjacency_heatmaps(matrices: Mapping[str, Any], *, same_class=None, titles: Mapping[str, str] | None = None,
                       softmax: bool = False, cell_inches: float = 0.06, suptitle: str | None = None) -> plt.Figure:
    """Seaborn heatmaps of ``[B, B]`` matrices side by side; same-class off-diagonal pairs (the false negatives)
    outlined in white. With ``softmax`` each row is shown as its softmax distribution (what FNAC compares).
    ``titles`` overrides panel titles (default: :data:`MATRIX_TITLES`, else the key)."""
    names = list(matrices)
    b = _np(matrices[names[0]]).shape[0]
    side = max(2.6, min(5.0, cell_inches * b + 1.2))
    fig, axes = plt.subplots(1, len(names), figsize=(side * len(names) + 0.6, side + 0.4), squeeze=False)
    mask = _np(same_class) if same_class is not None else None
    for ax, name in zip(axes[0], names):
        m = torch.as_tensor(_np(matrices[name]), dtype=torch.float64)
        if softmax:
            m = m.softmax(dim=1)
        sns.heatmap(m.numpy(), ax=ax, cmap="mako", square=True, cbar=True, xticklabels=False, yticklabels=False,
                    cbar_kws={"shrink": 0.75})
        if mask is not None:
            ii, jj = np.nonzero(mask)
            ax.scatter(jj + 0.5, ii + 0.5, s=max(4.0, 900.0 / b), marker="s", facecolors="none",
                       edgecolors="white", linewidths=0.8)
        ax.set_title({**MATRIX_TITLES, **(titles or {})}.get(name, name), fontsize=10)
        ax.set_xlabel("k (audio)" if name == "cross" else "k")
        ax.set_ylabel("b (image)" if name == "cross" else "b")
    note = "each row shown as its softmax distribution" if softmax else "logit scale (similarity / tau)"
    fig.suptitle(f"{suptitle}: {note}" if suptitle else note, fontsize=11)
    fig.tight_layout()
    return fig


def plotly_adjacency(matrices: Mapping[str, Any], *, same_class=None, labels: Sequence[str] | None = None,
                     softmax: bool = False, title: str | None = None) -> go.Figure:
    """Interactive heatmaps of ``[B, B]`` matrices (hover shows both members' classes), same-class pairs marked."""
    names = list(matrices)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[MATRIX_TITLES.get(n, n) for n in names],
                        horizontal_spacing=0.04)
    b = _np(matrices[names[0]]).shape[0]
    text = None
    if labels is not None:
        text = [[f"{i}: {labels[i]}<br>{j}: {labels[j]}" for j in range(b)] for i in range(b)]
    for c, name in enumerate(names, start=1):
        m = torch.as_tensor(_np(matrices[name]), dtype=torch.float64)
        if softmax:
            m = m.softmax(dim=1)
        fig.add_trace(go.Heatmap(z=m.numpy(), colorscale="Viridis", showscale=c == len(names), text=text,
                                 hovertemplate="%{text}<br>value %{z:.3f}<extra></extra>" if text else None),
                      row=1, col=c)
        if same_class is not None:
            ii, jj = np.nonzero(_np(same_class))
            fig.add_trace(go.Scatter(x=jj, y=ii, mode="markers", name="same-class pair", showlegend=c == 1,
                                     legendgroup="same", hoverinfo="skip",
                                     marker=dict(symbol="square-open", color="white", size=max(3, 300 // b))),
                          row=1, col=c)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{c if c > 1 else ''}", row=1, col=c)
    fig.update_layout(height=380, width=330 * len(names) + 80, title=title, margin=dict(t=70, l=30, r=30, b=30),
                      legend=dict(orientation="h", y=-0.05))
    return fig


# -- localisation maps --------------------------------------------------------------------------------------------


def _box_patch(box, *, colour: str, dashed: bool = False) -> mpatches.Rectangle:
    x0, y0, x1, y1 = vggss_box_to_pixels(list(box), MAP_SIZE)
    return mpatches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2,
                              linestyle="--" if dashed else "-")


def show_map(ax: plt.Axes, image, heatmap=None, *, box=None, distractor_boxes=None, title: str | None = None,
             alpha: float = 0.6) -> None:
    """One frame (uint8 ``[3, H, W]``) stretched to 224 x 224, the sounding object's box (solid green) and the
    distractors' boxes (dashed white); boxes normalised [x0, y0, x1, y1]. With a map ``[224, 224]`` the frame is
    drawn in grey under the map, and the region the cIoU scores (map >= its median) is outlined in black."""
    extent = (0, MAP_SIZE, MAP_SIZE, 0)
    frame = np.transpose(_np(image), (1, 2, 0))
    if heatmap is None:
        ax.imshow(frame, extent=extent, interpolation="nearest")
    else:
        grey = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        ax.imshow(grey, extent=extent, cmap="gray", interpolation="nearest")
        m = torch.as_tensor(_np(heatmap), dtype=torch.float32)
        ax.imshow(m.numpy(), extent=extent, cmap="jet", alpha=alpha)
        region = binarise(m[None])[0].numpy().astype(float)
        ax.contour(np.arange(MAP_SIZE) + 0.5, np.arange(MAP_SIZE) + 0.5, region, levels=[0.5], colors="black",
                   linewidths=1.0)
    for b in (distractor_boxes if distractor_boxes is not None else []):
        if min(_np(b)) >= 0:
            ax.add_patch(_box_patch(b, colour="white", dashed=True))
    if box is not None:
        ax.add_patch(_box_patch(box, colour="lime"))
    ax.set_xlim(0, MAP_SIZE)
    ax.set_ylim(MAP_SIZE, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def localisation_grid(images, maps: Mapping[str, Any], *, boxes, distractor_boxes=None, cious: Mapping[str, Any] | None = None,
                      row_titles: Sequence[str] | None = None, panel_inches: float = 2.0) -> plt.Figure:
    """Rows of samples; columns: the frame with its boxes, then each model's map (over the frame in grey, the
    median-thresholded region outlined) with its cIoU."""
    n = len(images)
    cols = 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(panel_inches * cols, panel_inches * n + 0.3), squeeze=False)
    for i in range(n):
        dist = distractor_boxes[i] if distractor_boxes is not None else None
        show_map(axes[i, 0], images[i], box=boxes[i], distractor_boxes=dist,
                 title=row_titles[i] if row_titles is not None else "frame, boxes")
        for c, (name, m) in enumerate(maps.items(), start=1):
            score = f" cIoU {float(_np(cious[name])[i]):.2f}" if cious is not None else ""
            show_map(axes[i, c], images[i], m[i], box=boxes[i], distractor_boxes=dist, title=f"{name}{score}")
    fig.tight_layout()
    return fig


# -- training curves and scores -----------------------------------------------------------------------------------


def loss_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], *, warmup_epochs: int | None = None) -> go.Figure:
    """Mean training loss terms per epoch, one line per run (``histories``: run name -> metrics.jsonl records)."""
    terms = ["loss", "nce", "fns_audio", "fns_visual", "tne"]
    fig = make_subplots(rows=1, cols=len(terms), subplot_titles=["total (weighted)", "NCE", "FNS audio",
                                                                 "FNS visual", "TNE"], horizontal_spacing=0.05)
    for run, history in histories.items():
        epochs = [r["epoch"] for r in history]
        for c, term in enumerate(terms, start=1):
            fig.add_trace(go.Scatter(x=epochs, y=[r[term] for r in history], mode="lines+markers", name=run,
                                     legendgroup=run, showlegend=c == 1,
                                     line=dict(color=MODEL_COLOURS.get(run))), row=1, col=c)
            if warmup_epochs:
                fig.add_vline(x=warmup_epochs + 0.5, line_dash="dot", line_color="grey", row=1, col=c)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=330, width=1250, title="Training loss terms (mean over the epoch's batches; "
                      "dotted: end of the NCE-only warm-up)", margin=dict(t=80))
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
                                     legendgroup=run, showlegend=c == 1, line=dict(color=MODEL_COLOURS.get(run))),
                          row=1, col=c)
    for name, scores in (levels or {}).items():
        for c, (key, _) in enumerate(metrics, start=1):
            fig.add_hline(y=scores[key], line_dash="dash", line_color="grey", annotation_text=name,
                          annotation_font_size=9, row=1, col=c)
    if warmup_epochs:
        for c in range(1, 4):
            fig.add_vline(x=warmup_epochs + 0.5, line_dash="dot", line_color="grey", row=1, col=c)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=360, width=1100, title="Validation scores per epoch (test-split reference levels dashed)",
                      margin=dict(t=80))
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
                                     legendgroup=run, showlegend=c == 1, line=dict(color=MODEL_COLOURS.get(run))),
                          row=1, col=c)
            fig.add_hline(y=0.5, line_dash="dash", line_color="grey", row=1, col=c)
            if warmup_epochs:
                fig.add_vline(x=warmup_epochs + 0.5, line_dash="dot", line_color="grey", row=1, col=c)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="same-class AUROC", range=[0.4, 1.0], row=1, col=1)
    fig.update_layout(height=340, title="False-negative detection on validation pairs (0.5 dashed: chance)",
                      margin=dict(t=80))
    return fig


def scores_bars(table: pd.DataFrame, *, title: str = "Test scores beside the trivial maps") -> go.Figure:
    """Grouped bars of a scores table (rows: models and reference maps; columns: metrics)."""
    fig = go.Figure()
    for row, values in table.iterrows():
        fig.add_trace(go.Bar(x=list(table.columns), y=values.values, name=str(row), text=[f"{v:.3f}" for v in values],
                             textposition="outside", marker_color=MODEL_COLOURS.get(str(row))))
    fig.update_layout(barmode="group", height=380, width=800, title=title, yaxis=dict(range=[0, 1.1]))
    return fig


# -- embeddings, precision-recall -----------------------------------------------------------------------------------


def embedding_scatter(projections: Mapping[str, np.ndarray], labels, *, class_names: Mapping[int, str] | None = None,
                      cols: int = 2, title: str | None = None) -> go.Figure:
    """2-D projections (panel title -> ``[N, 2]``) as scatter panels coloured by class, one legend entry per class."""
    names = list(projections)
    rows = -(-len(names) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.06, vertical_spacing=0.1)
    lab = np.asarray(labels)
    classes = sorted(set(lab.tolist()))
    palette = sns.color_palette("husl", len(classes)).as_hex()
    for p, name in enumerate(names):
        xy = np.asarray(projections[name])
        for k, c in enumerate(classes):
            sel = lab == c
            cname = class_names.get(c, str(c)) if class_names else str(c)
            fig.add_trace(go.Scattergl(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=cname, legendgroup=cname,
                                       showlegend=p == 0, marker=dict(size=5, color=palette[k]),
                                       hovertemplate=f"{cname}<extra></extra>"),
                          row=p // cols + 1, col=p % cols + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(height=420 * rows, width=1000, title=title, legend=dict(font=dict(size=9)))
    return fig


def pr_curves(curves: Mapping[str, Any], *, title: str = "Finding same-class pairs by intra-modal similarity") -> go.Figure:
    """Precision-recall curves (name -> :class:`~fnac_lab.analysis.PairRetrieval`) with each base rate dotted."""
    fig = go.Figure()
    palette = sns.color_palette("tab10", len(curves)).as_hex()
    for (name, pr), colour in zip(curves.items(), palette):
        fig.add_trace(go.Scatter(x=pr.recall, y=pr.precision, mode="lines", line=dict(color=colour),
                                 name=f"{name} (AP {pr.average_precision:.2f})"))
    base = next(iter(curves.values())).base_rate
    fig.add_hline(y=base, line_dash="dot", line_color="grey", annotation_text=f"random score ({base:.2f})")
    fig.update_layout(height=420, width=700, title=title, xaxis_title="recall (share of same-class pairs found)",
                      yaxis_title="precision", yaxis=dict(range=[0, 1.05]))
    return fig


# -- false-negative ratio, ablations ----------------------------------------------------------------------------------


def fn_ratio_figure(table: pd.DataFrame, *, paper: Mapping[int, float], other_mixes: Mapping[str, Mapping[int, float]]
                    ) -> plt.Figure:
    """Expected FN ratio against batch size, one line per class count (``table`` from
    :func:`~fnac_lab.data.sampling.fn_ratio_table`), with the paper's VGG-Sound points and other class mixes."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, group in table.groupby("n_classes"):
        ax.plot(group["batch_size"], 100 * group["fn_ratio"], marker=".", label=f"uniform, {k} classes")
    ax.scatter(list(paper), [100 * v for v in paper.values()], s=90, marker="*", color="black", zorder=5,
               label=f"paper, VGG-Sound ({100 * paper[128]:.2f} % / {100 * paper[256]:.2f} %)")
    for (name, points), marker in zip(other_mixes.items(), ("x", "P")):
        ax.scatter(list(points), [100 * v for v in points.values()], s=60, marker=marker, color="dimgrey", zorder=5,
                   label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("false-negative ratio (%)")
    ax.set_ylim(0, 101)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def ablation_figure(ours: pd.DataFrame, *, knob: str, paper: Mapping[str, Sequence[float]] | None,
                    paper_values: Sequence[Any] | None, title: str, ours_metrics: Sequence[str] = ("ap50", "mean_ciou"),
                    ours_label: str = "this workbench") -> go.Figure:
    """Two panels for one knob: left, our scores against the knob's values (``ours`` rows, metric columns and a
    ``knob`` column); right, the paper's published figures for the same knob (column name -> values)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=[ours_label, "paper (published)"], horizontal_spacing=0.1)
    x = [str(v) for v in ours[knob]]
    names = {"ap50": "AP50", "mean_ciou": "mean cIoU", "auc": "AUC", "baseline_ap50": "NCE twin AP50",
             "fn_ratio": "FN ratio"}
    for metric in ours_metrics:
        if metric in ours:
            fig.add_trace(go.Scatter(x=x, y=ours[metric], mode="lines+markers", name=f"ours: {names.get(metric, metric)}"),
                          row=1, col=1)
    if paper and paper_values is not None:
        px = [str(v) for v in paper_values]
        for column, values in paper.items():
            fig.add_trace(go.Scatter(x=px, y=values, mode="lines+markers", name=f"paper: {column}",
                                     line=dict(dash="dash")), row=1, col=2)
    else:
        fig.add_annotation(text="no published numbers for this knob", showarrow=False, xref="x2 domain",
                           yref="y2 domain", x=0.5, y=0.5)
    fig.update_xaxes(title_text=knob, type="category")
    fig.update_yaxes(title_text="score (0-1)", row=1, col=1)
    fig.update_yaxes(title_text="cIoU (%)", row=1, col=2)
    fig.update_layout(height=380, width=1000, title=title)
    return fig
