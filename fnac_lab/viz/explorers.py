"""What the notebooks' ipywidgets draw: the false-negative explorer's heatmaps (``03``) and the localisation-map
browser's frames and maps (``05``). Each callback draws one figure of :mod:`.static` into the widget's output; the
numbers come from :mod:`fnac_lab.analysis`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from ..analysis.adjacency import embedded_adjacency, same_class_mask
from ..data.sampling import false_negative_ratio
from .render import show_photo
from .static import adjacency_heatmaps, localisation_grid


@dataclass
class AdjacencyExplorer:
    """The four adjacency matrices of batches that each model embedded once: ``embedded[model][b]`` is the
    ``(img, aud)`` pair of batch ``b`` (:func:`~fnac_lab.analysis.embed_batch`), ``labels[b]`` its class labels.
    :meth:`show` is the callback of ``ipywidgets.interactive``."""

    embedded: Mapping[str, Sequence[tuple[torch.Tensor, torch.Tensor]]]
    labels: Sequence[Any]

    def figure(self, *, model: str, batch: int, tau: float, threshold: float, soft: bool,
               as_softmax: bool) -> plt.Figure:
        """Heatmaps of batch ``batch`` as ``model`` embedded it, at temperature ``tau``, with the TNE mask
        thresholded at ``threshold`` (or the soft mask with ``soft``), same-class pairs outlined; ``as_softmax``
        shows each row as its softmax distribution."""
        adj = embedded_adjacency(self.embedded, model=model, batch=batch, tau=tau,
                                 tne_threshold=None if soft else threshold)
        mask = "soft" if soft else f"> {threshold:.2f}"
        return adjacency_heatmaps(adj.matrices(), same_class=same_class_mask(self.labels[batch]), softmax=as_softmax,
                                  suptitle=f"{model}, batch {batch}, tau {tau:.3g}, TNE mask {mask}, "
                                           f"FN ratio {false_negative_ratio(self.labels[batch]):.2f}")

    def show(self, *, model: str, batch: int, tau: float, threshold: float, soft: bool, as_softmax: bool) -> None:
        """Draws :meth:`figure` into the output below the widget's controls."""
        self.figure(model=model, batch=batch, tau=tau, threshold=threshold, soft=soft, as_softmax=as_softmax)
        plt.show()


def sample_grid(data, results: Mapping[str, Any], *, indices: Sequence[int], title: str) -> plt.Figure:
    """:func:`~.static.localisation_grid` of the samples ``indices`` of ``data``: one row each, titled by its
    class, with every model's map and cIoU from ``results[model]`` (:func:`~fnac_lab.analysis.localise`). The
    built-in data's frames show the sounding object's box and the distractors'; real frames the outline of their
    ground truth."""
    rows = [int(i) for i in indices]
    batch = data.batch(rows)
    outlines = ({"boxes": batch["box"], "distractor_boxes": batch["distractor_boxes"]} if "box" in batch else
                {"ground_truth": batch["gt"] if "gt" in batch else data.gt_maps(rows)})
    return localisation_grid(batch["image"], {n: r.maps[rows] for n, r in results.items()}, **outlines,
                             cious={n: r.cious[rows] for n, r in results.items()},
                             row_titles=[data.class_name(int(c)) for c in batch["label"]], title=title)


@dataclass
class MapBrowser:
    """Steps through the samples of ``data`` one at a time: ``orders[name]`` lists sample indices in that order,
    ``results[model]`` holds each model's maps and cIoU. :meth:`show` is the callback of
    ``ipywidgets.interactive``."""

    data: Any
    results: Mapping[str, Any]
    orders: Mapping[str, Sequence[int]]

    def figure(self, *, order: str, position: int) -> plt.Figure:
        """The sample at ``position`` (1 is the first) of the order ``order``: :func:`sample_grid` of that one
        sample, titled with its index, id and position."""
        i = int(self.orders[order][position - 1])
        return sample_grid(self.data, self.results, indices=[i],
                           title=f"sample {i} ({self.data.ids[i]}), position {position} of {len(self.data)}")

    def show(self, *, order: str, position: int) -> None:
        """Draws :meth:`figure` into the output below the widget's controls, as a JPEG."""
        show_photo(self.figure(order=order, position=position))
