"""Matplotlib figures: seaborn heatmaps of adjacency matrices, localisation maps over frames with their boxes,
and the false-negative ratio against batch size. Each figure is at most :data:`MAX_FIGURE_INCHES` wide."""

from __future__ import annotations

import textwrap
from typing import Any, Mapping, Sequence

import matplotlib.patches as mpatches
import matplotlib.patheffects as path_effects
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D

from ..audio import NOVERLAP, NPERSEG
from ..metrics import MAP_SIZE, binarise, vggss_box_to_pixels
from .styles import MAP_CMAP, MATRIX_TITLES, MAX_FIGURE_INCHES, as_numpy, panel_grid


def adjacency_heatmaps(matrices: Mapping[str, Any], *, same_class=None, titles: Mapping[str, str] | None = None,
                       softmax: bool = False, cell_inches: float = 0.06, suptitle: str | None = None) -> plt.Figure:
    """Seaborn heatmaps of ``[B, B]`` matrices, each on its own colour scale with its colour bar (the title says
    so), side by side or wrapped onto rows (at
    most :data:`MAX_FIGURE_INCHES` wide); same-class off-diagonal pairs (the false negatives) outlined in white.
    With ``softmax`` each row is shown as its softmax distribution (what FNAC compares). ``titles`` overrides
    panel titles (default: :data:`MATRIX_TITLES`, else the key). A ``suptitle`` too wide for the figure puts the
    note on how the matrices are shown on a second line."""
    names = list(matrices)
    b = as_numpy(matrices[names[0]]).shape[0]
    rows, cols, side = panel_grid(len(names), max(2.6, min(5.0, cell_inches * b + 1.2)), min_side=2.6, extra=0.6)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols + 0.6, side * rows + 0.4), squeeze=False)
    mask = as_numpy(same_class) if same_class is not None else None
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        m = torch.as_tensor(as_numpy(matrices[name]), dtype=torch.float64)
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
    note = ("each row's softmax" if softmax else "similarity / tau") + (", each panel on its own scale"
                                                                        if len(names) > 1 else "")
    heading = fig.suptitle(f"{suptitle}: {note}" if suptitle else note, fontsize=11)
    if suptitle:
        _fit_title(fig, heading, f"{suptitle}:", note)
    fig.tight_layout()
    return fig


def _fit_title(fig: plt.Figure, heading, head: str, note: str) -> None:
    """A title ``head note`` wider than its figure: the note on a line of its own, and ``head`` broken between
    words as far as the figure's width needs."""
    renderer = fig.canvas.get_renderer()
    if heading.get_window_extent(renderer).width <= fig.bbox.width:
        return
    heading.set_text(f"{head}\n{note}")
    width = heading.get_window_extent(renderer).width
    if width > fig.bbox.width:
        chars = max(10, int(max(len(head), len(note)) * fig.bbox.width / width) - 2)
        heading.set_text(textwrap.fill(head, width=chars) + "\n" + note)


#: A thin black edge under coloured outlines, so that a green box shows on a green object and a white one on white.
OUTLINE_EDGE = [path_effects.Stroke(linewidth=3.5, foreground="black"), path_effects.Normal()]


def _box_patch(box, *, colour: str, dashed: bool = False) -> mpatches.Rectangle:
    x0, y0, x1, y1 = vggss_box_to_pixels(list(box), MAP_SIZE)
    patch = mpatches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2,
                               linestyle="--" if dashed else "-")
    patch.set_path_effects(OUTLINE_EDGE)
    return patch


def outline_legend(*, box: bool, distractors: bool, ground_truth: bool, maps: bool) -> list[Line2D]:
    """Legend handles for what :func:`show_map` draws: the sounding object's box or the ground truth's outline,
    the distractors' boxes, and the region of each map that the cIoU scores."""
    handles = []
    if box:
        handles.append(Line2D([], [], color="lime", linewidth=2, path_effects=OUTLINE_EDGE, label="sounding object"))
    if ground_truth:
        handles.append(Line2D([], [], color="lime", linewidth=2, label="ground truth"))
    if distractors:
        handles.append(Line2D([], [], color="white", linewidth=2, linestyle="--", path_effects=OUTLINE_EDGE,
                              label="silent distractor"))
    if maps:
        handles.append(Line2D([], [], color="black", linewidth=1, label="map >= its median (the region cIoU scores)"))
    return handles


def _min_max(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def show_map(ax: plt.Axes, image, heatmap=None, *, box=None, distractor_boxes=None, ground_truth=None,
             title: str | None = None, alpha: float = 0.6) -> None:
    """One frame (uint8 ``[3, H, W]``) stretched to 224 x 224, the sounding object's box (solid green) and the
    distractors' boxes (dashed white); boxes normalised [x0, y0, x1, y1]. A ``ground_truth`` map ``[224, 224]``
    (real data: boxes or a mask) has the outline of its positive region drawn in green instead of a box. With a
    map ``[224, 224]`` the frame is drawn in grey under the map, min-max normalised to [0, 1] in :data:`MAP_CMAP`
    (see :func:`map_colorbar`), and the region the cIoU scores (map >= its median) is outlined in black."""
    extent = (0, MAP_SIZE, MAP_SIZE, 0)
    frame = np.transpose(as_numpy(image), (1, 2, 0))
    if heatmap is None:
        ax.imshow(frame, extent=extent, interpolation="nearest")
    else:
        grey = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        ax.imshow(grey, extent=extent, cmap="gray", interpolation="nearest")
        m = torch.as_tensor(as_numpy(heatmap), dtype=torch.float32)
        ax.imshow(_min_max(m.numpy()), extent=extent, cmap=MAP_CMAP, vmin=0.0, vmax=1.0, alpha=alpha)
        region = binarise(m[None])[0].numpy().astype(float)
        ax.contour(np.arange(MAP_SIZE) + 0.5, np.arange(MAP_SIZE) + 0.5, region, levels=[0.5], colors="black",
                   linewidths=1.0)
    for b in (distractor_boxes if distractor_boxes is not None else []):
        if min(as_numpy(b)) >= 0:
            ax.add_patch(_box_patch(b, colour="white", dashed=True))
    if box is not None:
        ax.add_patch(_box_patch(box, colour="lime"))
    if ground_truth is not None:
        region = (as_numpy(ground_truth) > 0).astype(float)
        if region.any():
            ax.contour(np.arange(MAP_SIZE) + 0.5, np.arange(MAP_SIZE) + 0.5, region, levels=[0.5], colors="lime",
                       linewidths=2.0)
    ax.set_xlim(0, MAP_SIZE)
    ax.set_ylim(MAP_SIZE, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def map_colorbar(fig: plt.Figure, axes) -> None:
    """One colour bar beside ``axes`` for the maps that :func:`show_map` draws."""
    rows = np.atleast_2d(np.asarray(axes, dtype=object)).shape[0]
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), MAP_CMAP), ax=axes, shrink=0.9, aspect=12 * rows,
                       pad=0.02)
    bar.set_label("map (min-max normalised)", fontsize=9)
    bar.ax.tick_params(labelsize=8)


#: Characters of a 9-point panel title per inch of panel; a longer "NAME cIoU 0.00" goes on two lines.
TITLE_CHARS_PER_INCH = 13


def _panel_title(name: str, ciou: float | None, confidence: float | None, width: int) -> str:
    """``NAME cIoU 0.00`` when it fits in ``width`` characters and no confidence is shown, else the scores on a
    second line."""
    parts = [f"cIoU {ciou:.2f}" if ciou is not None and np.isfinite(ciou) else None,
             f"conf {confidence:.2f}" if confidence is not None else None]
    shown = ", ".join(p for p in parts if p)
    if not shown:
        return name
    one_line = f"{name} {shown}"
    return f"{name}\n{shown}" if confidence is not None or len(one_line) > width else one_line


def localisation_grid(images, maps: Mapping[str, Any], *, boxes=None, distractor_boxes=None, ground_truth=None,
                      cious: Mapping[str, Any] | None = None, confidences: Mapping[str, Any] | None = None,
                      row_titles: Sequence[str] | None = None, panel_inches: float = 2.0,
                      title: str | None = None) -> plt.Figure:
    """Rows of samples; columns: the frame with its boxes, then each model's map (over the frame in grey, the
    median-thresholded region outlined) with its cIoU and, given ``confidences``, the confidence of the extended
    protocol; one colour bar for the maps. ``boxes`` holds None for a clip without a sounding object (a negative of
    the extended protocol; its cIoU NaN, not shown). Real data gives ``ground_truth`` maps ``[N, 224, 224]`` instead
    of boxes (:func:`show_map`). A legend below says what each outline is. Panels shrink from ``panel_inches`` as
    far as the figure needs to stay :data:`MAX_FIGURE_INCHES` wide; ``title`` sits above the panel titles."""
    n = len(images)
    cols = 1 + len(maps)
    side = min(panel_inches, (MAX_FIGURE_INCHES - 1.0) / cols)
    head = 0.45 if title else 0.0
    width = int(side * TITLE_CHARS_PER_INCH)
    two_lines = confidences is not None or (cious is not None and any(len(f"{n} cIoU 0.00") > width for n in maps))
    lines = 0.15 if two_lines else 0.0
    fig, axes = plt.subplots(n, cols, figsize=(side * cols + 1.0, (side + 0.3 + lines) * n + head + 0.3), squeeze=False,
                             layout="constrained")
    for i in range(n):
        outlines = dict(box=boxes[i] if boxes is not None else None,
                        distractor_boxes=distractor_boxes[i] if distractor_boxes is not None else None,
                        ground_truth=ground_truth[i] if ground_truth is not None else None)
        show_map(axes[i, 0], images[i], **outlines, title=row_titles[i] if row_titles is not None else "frame, boxes")
        for c, (name, m) in enumerate(maps.items(), start=1):
            ciou = float(as_numpy(cious[name])[i]) if cious is not None else None
            conf = float(as_numpy(confidences[name])[i]) if confidences is not None else None
            show_map(axes[i, c], images[i], m[i], **outlines, title=_panel_title(name, ciou, conf, width))
    if maps:
        map_colorbar(fig, axes[:, 1:])
    handles = outline_legend(box=boxes is not None and any(b is not None for b in boxes),
                             distractors=distractor_boxes is not None, ground_truth=ground_truth is not None,
                             maps=bool(maps))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def fn_ratio_figure(table: pd.DataFrame, *, paper: Mapping[int, float], other_mixes: Mapping[str, Mapping[int, float]]
                    ) -> plt.Figure:
    """Expected FN ratio against batch size, one line per class count (``table`` from
    :func:`~fnac_lab.data.sampling.fn_ratio_table`), with the paper's VGG-Sound points and other class mixes."""
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
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
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes, off the curves
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def same_class_retrieval_figure(retrieval: Mapping[str, Any], mass: Mapping[str, Mapping[float, float]]) -> plt.Figure:
    """Two panels on finding a batch's false negatives: the precision-recall curve of each similarity's pair scores
    (``retrieval``: name to :class:`~fnac_lab.analysis.retrieval.PairRetrieval`) against the random score, and the
    row-softmax mass on same-class partners per similarity and temperature (``mass``: name to ``{tau: mass}``)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 4))
    for name, pr in retrieval.items():
        ax1.plot(pr.recall, pr.precision, label=f"{name}: AP {pr.average_precision:.2f}")
    ax1.axhline(next(iter(retrieval.values())).base_rate, ls=":", c="grey", label="random score")
    ax1.set(xlabel="recall", ylabel="precision", title="finding same-class pairs", ylim=(0, 1.05))
    ax1.legend()
    names = list(mass)
    taus = list(next(iter(mass.values())))
    width = 0.7 / len(taus)
    for j, tau in enumerate(taus):
        offsets = np.arange(len(names)) + (j - (len(taus) - 1) / 2) * width
        bars = ax2.bar(offsets, [mass[name][tau] for name in names], width, label=f"tau = {tau}")
        ax2.bar_label(bars, fmt="%.2f", fontsize=8)
    ax2.set_xticks(range(len(names)), names)
    ax2.set(ylabel="mean softmax mass per row", title="row-softmax mass on same-class partners")
    ax2.legend()
    fig.tight_layout()
    return fig


def photos_and_spectrograms(pictures: Sequence[np.ndarray], spectrograms: Sequence[Any], titles: Sequence[str], *,
                            rate: int) -> plt.Figure:
    """Cut-out photographs (RGBA) over their log-spectrograms, one column each; the spectrograms share one colour
    scale, so their levels compare across columns."""
    specs = [as_numpy(s) for s in spectrograms]
    low, high = min(float(s.min()) for s in specs), max(float(s.max()) for s in specs)
    fig, axs = plt.subplots(2, len(pictures), figsize=(min(8.0, MAX_FIGURE_INCHES), 5.0),
                            gridspec_kw={"height_ratios": [1.1, 1]}, squeeze=False)
    for k, (picture, spec, title) in enumerate(zip(pictures, specs, titles)):
        top, bottom = axs[0, k], axs[1, k]
        top.set_facecolor("#e8e8e8")
        top.imshow(picture)
        top.set_xticks([]), top.set_yticks([])
        top.set_title(title, fontsize=9)
        seconds = ((spec.shape[1] - 1) * (NPERSEG - NOVERLAP) + NPERSEG) / rate
        image = bottom.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=high,
                              extent=(0, seconds, 0, rate / 2000))
        bottom.set_xlabel("time (s)")
        if k == 0:
            bottom.set_ylabel("frequency (kHz)")
    fig.tight_layout()
    fig.colorbar(image, ax=list(axs[1]), fraction=0.025, pad=0.02, label="log power")
    return fig
