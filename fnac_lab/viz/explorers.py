"""What the notebooks' ipywidgets draw: the false-negative explorer's heatmaps (``03``). Each callback draws one
figure of :mod:`.static` into the widget's output; the numbers come from :mod:`fnac_lab.analysis`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from ..analysis.adjacency import embedded_adjacency, same_class_mask
from ..data.sampling import false_negative_ratio
from .static import adjacency_heatmaps


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
                                  suptitle=f"{model}, batch {batch}, tau {tau:.3f}, TNE mask {mask}, "
                                           f"FN ratio {false_negative_ratio(self.labels[batch]):.2f}")

    def show(self, *, model: str, batch: int, tau: float, threshold: float, soft: bool, as_softmax: bool) -> None:
        """Draws :meth:`figure` into the output below the widget's controls."""
        self.figure(model=model, batch=batch, tau=tau, threshold=threshold, soft=soft, as_softmax=as_softmax)
        plt.show()
