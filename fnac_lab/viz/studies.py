"""Figures of the paired studies (FNAC's diagnosis, the label-free remedies): gains over the NCE twin with their
95 % intervals, the share of the oracle mask's gain a remedy recovers, and what the runs' similarities, detection
and validation scores do epoch by epoch. Each variant is drawn in its method's colour (``Method.colour``), the NCE
bound with the oracle mask in NCE's. The numbers come from :mod:`fnac_lab.ablate`."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..methods import METHODS

#: Marker shape of each ``class_bias_p`` of a study, in increasing order.
BIAS_SYMBOLS = ("circle", "diamond", "square")


def paired_gain_figure(gains: pd.DataFrame, *, metric: str = "test AP50",
                       title: str = "Paired gain over the NCE twin") -> go.Figure:
    """One marker per variant (rows of :func:`fnac_lab.ablate.diagnosis.paired_gains`) at its mean gain with the
    95 % interval as error bars, one colour and shape per ``class_bias_p``, each bias a little apart within its
    variant's row so that no marker hides another's interval; zero dashed. Variants read top to bottom."""
    fig = go.Figure()
    order = list(dict.fromkeys(gains["variant"]))
    row = {v: len(order) - 1 - i for i, v in enumerate(order)}  # the first variant on top
    groups = list(gains.groupby("class_bias_p", sort=True))
    for k, (bias, group) in enumerate(groups):
        offset = 0.0 if len(groups) == 1 else 0.36 * (0.5 - k / (len(groups) - 1))
        hover = [f"{v}, class_bias_p {bias:g}<br>gain {g:+.3f} [{lo:+.3f}, {hi:+.3f}], {n} seeds<br>by seed: {s}"
                 for v, g, lo, hi, n, s in zip(group["variant"], group["gain"], group["low"], group["high"],
                                               group["n"], group["gains"])]
        fig.add_trace(go.Scatter(
            x=group["gain"], y=[row[v] + offset for v in group["variant"]], mode="markers",
            name=f"class_bias_p {bias:g}", marker=dict(size=9, symbol=BIAS_SYMBOLS[k % len(BIAS_SYMBOLS)]),
            hovertext=hover, hoverinfo="text",
            error_x=dict(type="data", symmetric=False, array=(group["high"] - group["gain"]).fillna(0),
                         arrayminus=(group["gain"] - group["low"]).fillna(0))))
    fig.add_vline(x=0, line_dash="dash", line_color="grey")
    fig.update_yaxes(tickmode="array", tickvals=list(row.values()), ticktext=list(row), title_text=None,
                     range=[-0.6, len(order) - 0.4], zeroline=False, showgrid=False)
    fig.update_xaxes(title_text=f"{metric} gain (variant minus NCE twin, mean over seeds)", zeroline=False)
    fig.update_layout(height=130 + 34 * len(order), autosize=True, margin=dict(l=10, t=80),
                      title=f"{title}<br><sup>95 % Student-t intervals over paired seeds</sup>",
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return fig


#: Same-class AUROCs of a run per epoch: FNAC's targets and the cross-modal logits NCE contrasts.
AUROC_LINES = {"fn_auroc_audio": "audio target  aud aud^T", "fn_auroc_visual": "visual target  v v^T",
               "fn_auroc_foreground": "foreground  f f^T", "fn_auroc_cross": "cross-modal logits (NCE)"}


def auroc_epoch_figure(epochs: pd.DataFrame, variants: Sequence[str], *, warmup_epochs: int | None = None,
                       title: str = "Which similarity finds the false negatives") -> go.Figure:
    """Per variant a panel (two a row): the same-class AUROC of each of :data:`AUROC_LINES` per epoch, mean over
    the seeds of ``epochs`` (rows of ``fnac_diagnosis_epochs.csv``); 0.5 is chance."""
    cols = min(2, len(variants))
    rows = math.ceil(len(variants) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(variants), shared_yaxes=True,
                        horizontal_spacing=0.06, vertical_spacing=0.16)
    colours = dict(zip(AUROC_LINES, qualitative.D3))
    for p, variant in enumerate(variants):
        mean = epochs[epochs["variant"] == variant].groupby("epoch").mean(numeric_only=True)
        row, col = p // cols + 1, p % cols + 1
        for key, label in AUROC_LINES.items():
            if key in mean and mean[key].notna().any():
                fig.add_trace(go.Scatter(x=mean.index, y=mean[key], mode="lines+markers", name=label, legendgroup=key,
                                         showlegend=p == 0, line=dict(color=colours[key])), row=row, col=col)
        fig.add_hline(y=0.5, line_dash="dash", line_color="grey", row=row, col=col)
        if warmup_epochs:
            fig.add_vline(x=warmup_epochs + 0.5, line_dash="dot", line_color="grey", row=row, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="same-class AUROC", col=1)
    fig.update_layout(height=300 * rows + 130, autosize=True, margin=dict(t=90), title=(
        f"{title}<br><sup>validation pairs, mean over seeds; dotted: end of the warm-up; dashed: chance</sup>"),
        legend=dict(orientation="h", y=-0.08, yanchor="top"))
    return fig


def variant_colours(table: pd.DataFrame) -> dict[str, str]:
    """Each variant of a study's table (``variant`` and ``method`` columns) in its method's colour."""
    return {v: METHODS[m].colour for v, m in zip(table["variant"], table["method"])}


def _interval_bar(high: float, value: float, low: float) -> dict:
    def clean(x: float) -> float:
        return 0.0 if math.isnan(x) else x
    return dict(type="data", symmetric=False, array=[clean(high - value)], arrayminus=[clean(value - low)])


def remedy_gain_figure(gains: pd.DataFrame, *, metric: str = "test AP50", share_range: float = 3.0,
                       title: str = "What each variant gains over its NCE twin") -> go.Figure:
    """A row of two panels per ``class_bias_p`` (rows of :func:`fnac_lab.ablate.remedies.paired_gains`): left the
    paired gain over the NCE twin, right the share of the oracle mask's gain recovered, each at its mean with its
    95 % interval, each variant in its method's colour. Zero is dashed, all of the oracle's gain (1) dotted; shares
    are drawn within +-``share_range`` (hover gives every figure)."""
    biases = sorted(gains["class_bias_p"].unique(), reverse=True)
    order = list(dict.fromkeys(gains["variant"]))
    fig = make_subplots(rows=len(biases), cols=2, shared_yaxes=True, horizontal_spacing=0.03, vertical_spacing=0.12,
                        column_widths=[0.55, 0.45], row_titles=[f"class_bias_p {b:g}" for b in biases],
                        subplot_titles=[f"{metric} gain over the NCE twin", "share of the oracle mask's gain"]
                        + [""] * (2 * len(biases) - 2))
    for row, bias in enumerate(biases, start=1):
        for r in gains[gains["class_bias_p"] == bias].to_dict("records"):
            colour = METHODS[r["method"]].colour
            hover = (f"{r['variant']}, class_bias_p {bias:g}, {r['n']} seeds<br>gain {r['gain']:+.3f} "
                     f"[{r['low']:+.3f}, {r['high']:+.3f}]<br>by seed: {r['gains']}<br>share of the oracle's gain "
                     f"{r['recovered']:+.2f} [{r['recovered_low']:+.2f}, {r['recovered_high']:+.2f}]")
            for col, (value, low, high) in enumerate((("gain", "low", "high"),
                                                      ("recovered", "recovered_low", "recovered_high")), start=1):
                fig.add_trace(go.Scatter(x=[r[value]], y=[r["variant"]], mode="markers", showlegend=False,
                                         marker=dict(size=10, color=colour), hovertext=hover, hoverinfo="text",
                                         error_x=dict(**_interval_bar(r[high], r[value], r[low]), color=colour,
                                                      thickness=2)), row=row, col=col)
        fig.add_vline(x=0, line_dash="dash", line_color="grey", row=row, col=1)
        fig.add_vline(x=0, line_dash="dash", line_color="grey", row=row, col=2)
        fig.add_vline(x=1, line_dash="dot", line_color="grey", row=row, col=2)
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1])
    fig.update_xaxes(zeroline=False)
    fig.update_xaxes(range=[-share_range, share_range], col=2)
    fig.update_xaxes(title_text=f"{metric} gain, mean over paired seeds", row=len(biases), col=1)
    fig.update_xaxes(title_text="mean gain / oracle mask's mean gain", row=len(biases), col=2)
    fig.update_layout(height=140 + len(biases) * (50 + 30 * len(order)), autosize=True, margin=dict(l=10, t=90),
                      title=f"{title}<br><sup>95 % intervals: Student-t over paired seeds (gain), percentile "
                            f"bootstrap over seeds (share)</sup>")
    return fig


def detection_epoch_figure(detection: pd.DataFrame, colours: Mapping[str, str], *, warmup_epochs: int | None = None,
                           title: str = "How well each remedy finds the false negatives") -> go.Figure:
    """Three panels over the epochs (rows of :func:`fnac_lab.ablate.remedies.detection_by_epoch`): precision and
    recall of the detected pairs against the batches' same-class pairs, and the share of pairs detected; the
    precision a random pick would have (the share of same-class pairs) is the grey line. Means over seeds."""
    panels = {"fn_precision": "precision", "fn_recall": "recall", "fn_detected_share": "share of pairs detected"}
    fig = make_subplots(rows=1, cols=3, subplot_titles=list(panels.values()), horizontal_spacing=0.07)
    for p, variant in enumerate(dict.fromkeys(detection["variant"])):
        own = detection[detection["variant"] == variant]
        for col, key in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(x=own["epoch"], y=own[key], mode="lines+markers", name=variant,
                                     legendgroup=variant, showlegend=col == 1, line=dict(color=colours[variant])),
                          row=1, col=col)
        if p == 0:
            fig.add_trace(go.Scatter(x=own["epoch"], y=own["same_class_share"], mode="lines", name="random pick "
                                     "(share of same-class pairs)", line=dict(color="grey", dash="dash")), row=1, col=1)
    if warmup_epochs:
        for col in (1, 2, 3):
            fig.add_vline(x=warmup_epochs + 0.5, line_dash="dot", line_color="grey", row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(height=420, autosize=True, margin=dict(t=90), legend=dict(orientation="h", y=-0.2,
                      yanchor="top"), title=f"{title}<br><sup>against the batches' class labels, mean over seeds; "
                                            f"dotted: end of the warm-up</sup>")
    return fig


def validation_gap_figure(gaps: pd.DataFrame, colours: Mapping[str, str], *, warmup_epochs: int | None = None,
                          title: str = "When in training each variant gains or loses") -> go.Figure:
    """Validation AP50 minus the NCE twin's, epoch by epoch (rows of :func:`fnac_lab.ablate.remedies.validation_gaps`):
    a panel per variant (two a row, one y scale), its mean over seeds in its colour with the 95 % interval as a
    band; zero dashed, the warm-up's end dotted."""
    variants = list(dict.fromkeys(gaps["variant"]))
    cols = min(2, len(variants))
    rows = math.ceil(len(variants) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=variants, shared_yaxes=True, shared_xaxes=True,
                        horizontal_spacing=0.05, vertical_spacing=0.25 / rows)
    for p, variant in enumerate(variants):
        row, col = p // cols + 1, p % cols + 1
        own = gaps[gaps["variant"] == variant]
        colour = colours[variant]
        band = own.dropna(subset=["low", "high"])
        if len(band):
            fig.add_trace(go.Scatter(x=list(band["epoch"]) + list(band["epoch"])[::-1],
                                     y=list(band["high"]) + list(band["low"])[::-1], fill="toself", mode="none",
                                     fillcolor=colour, opacity=0.2, hoverinfo="skip", showlegend=False),
                          row=row, col=col)
        fig.add_trace(go.Scatter(x=own["epoch"], y=own["gap"], mode="lines+markers", name=variant, showlegend=False,
                                 line=dict(color=colour),
                                 hovertext=[f"{variant}, epoch {e}: {g:+.3f} ({n} seeds)"
                                            for e, g, n in zip(own["epoch"], own["gap"], own["n"])],
                                 hoverinfo="text"), row=row, col=col)
        fig.add_hline(y=0, line_dash="dash", line_color="grey", row=row, col=col)
        if warmup_epochs:
            fig.add_vline(x=warmup_epochs + 0.5, line_dash="dot", line_color="grey", row=row, col=col)
    fig.update_xaxes(dtick=1)
    fig.update_xaxes(title_text="epoch", row=rows)
    fig.update_yaxes(title_text="val. AP50 minus twin's", col=1)
    fig.update_layout(height=220 * rows + 120, autosize=True, margin=dict(t=90),
                      title=f"{title}<br><sup>validation AP50 minus the NCE twin's in the same epoch, mean over paired "
                            f"seeds; bands: 95 % Student-t intervals; dotted: end of the warm-up</sup>")
    return fig
