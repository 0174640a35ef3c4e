"""A batch's adjacency matrices, the false negatives among its pairs, and idealised embeddings.

The adjacency matrices are the ones the FNAC terms compare (Sun et al., CVPR 2023, section 3), built with the
functions of :mod:`fnac_lab.losses`; with ``img`` ``[B, C, h, w]`` and ``aud`` ``[B, C]`` normalised:

    audio       A_aud[b, k] = <aud[b], aud[k]> / tau
    visual      A_img[b, k] = <v[b], v[k]> / tau            v = spatial mean of img (not re-normalised)
    cross       logits[b, k] = max_hw S[b, k, h, w]         image b against audio k
    foreground  A_fg[b, k] = <f[b], f[k]> / tau             f = foreground-pooled img (TNE mask)

so that ``fns_audio = D(softmax(audio), softmax(cross))``, ``fns_visual = D(softmax(visual),
softmax(cross))`` and ``tne = D(softmax(audio), softmax(foreground))``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..losses import (TNE_THRESHOLD, BatchAffinities, batch_affinities, distribution_distance, nce_loss,
                      same_class_pairs)
from ..models import Localiser
from ..utils import normalise_images

MATRICES = ("audio", "visual", "cross", "foreground")


def batch_adjacency(img: torch.Tensor, aud: torch.Tensor, *, tau: float,
                    tne_threshold: float | None = TNE_THRESHOLD) -> BatchAffinities:
    """The adjacency matrices of a batch of normalised embeddings ``img`` ``[B, C, h, w]`` and ``aud`` ``[B, C]``: the
    published FNAC terms' own matrices (:func:`~fnac_lab.losses.batch_affinities`, every one at ``tau``)."""
    return batch_affinities(img, aud, tau=tau, tne_threshold=tne_threshold)


def embedded_adjacency(embedded: Mapping[str, Sequence[tuple[torch.Tensor, torch.Tensor]]], *, model: str, batch: int,
                       tau: float, tne_threshold: float | None) -> BatchAffinities:
    """:func:`batch_adjacency` of batch ``batch`` as ``model`` embedded it: ``embedded[model][batch]`` is the
    ``(img, aud)`` pair that :func:`embed_batch` returned for it (each batch embedded once, matrices recomputed
    for any ``tau`` and threshold)."""
    img, aud = embedded[model][batch]
    return batch_adjacency(img, aud, tau=tau, tne_threshold=tne_threshold)


def descend_logits(start: torch.Tensor, *, fns_target: torch.Tensor | None = None, fns_weight: float = 0.0,
                   distance: str = "l1", steps: int = 300, lr: float = 0.1) -> torch.Tensor:
    """Minimise ``nce_loss(logits) + fns_weight * D(softmax(fns_target), softmax(logits))`` over free logits with
    Adam from ``start``: what NCE, alone or with an FNS term, does to the cross-modal matrix when every entry may
    move independently (a network cannot, but it shows where the objective pulls)."""
    if fns_weight and fns_target is None:
        raise ValueError("descend_logits: fns_weight is set but fns_target is None")
    logits = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        objective = nce_loss(logits)
        if fns_weight:
            objective = objective + fns_weight * distribution_distance(fns_target, logits, distance)
        objective.backward()
        optimizer.step()
    return logits.detach()


@torch.no_grad()
def embed_batch(model: Localiser, batch: Mapping[str, Any], *, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The model's normalised visual maps and audio embeddings of a batch (eval mode, float32, on the CPU)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    img, aud = model(normalise_images(batch["image"].to(device)), batch["spec"].to(device).float())
    model.train(was_training)
    return img.float().cpu(), aud.float().cpu()


def idealised_embeddings(batch: Mapping[str, Any], *, n_classes: int, grid: int = 7, dim: int = 16, noise: float = 0.1,
                         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings a perfectly trained model would give, drawn from a batch's annotations (float64, normalised).

    Every class ``c`` gets a random unit code ``u_c`` and the background one more code ``u_bg``. A clip embeds
    as ``u_label + noise``; a frame as a ``grid x grid`` map whose cell holds the code of the object covering
    the cell centre (the sounding object where it overlaps a distractor), ``u_bg`` elsewhere, plus noise.
    Boxes are the batch's normalised ``box`` and ``distractor_boxes`` (labels ``distractor_labels``, -1 = none).
    """
    gen = torch.Generator().manual_seed(seed)
    codes = torch.nn.functional.normalize(torch.randn(n_classes + 1, dim, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.as_tensor(batch["label"]).long()
    b = len(labels)
    centres = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    owner = torch.full((b, grid, grid), n_classes, dtype=torch.long)

    def paint(box, cls: int, i: int) -> None:
        x0, y0, x1, y1 = (float(v) for v in box)
        inside = ((centres[:, None] >= y0) & (centres[:, None] < y1) & (centres[None, :] >= x0) & (centres[None, :] < x1))
        owner[i][inside] = cls

    for i in range(b):
        for box, cls in zip(batch["distractor_boxes"][i], batch["distractor_labels"][i]):
            if int(cls) >= 0:
                paint(box, int(cls), i)
        paint(batch["box"][i], int(labels[i]), i)
    img = codes[owner].permute(0, 3, 1, 2) + noise * torch.randn(b, dim, grid, grid, generator=gen, dtype=torch.float64)
    aud = codes[labels] + noise * torch.randn(b, dim, generator=gen, dtype=torch.float64)
    return torch.nn.functional.normalize(img, dim=1), torch.nn.functional.normalize(aud, dim=1)


def same_class_mask(labels, *, include_self: bool = False) -> torch.Tensor:
    """``[B, B]`` bool: ``labels[i] == labels[j]`` (and ``i != j`` unless ``include_self``): the false negatives
    of contrastive learning, which treats every off-diagonal pair as a negative."""
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    codes = torch.from_numpy(np.unique(lab, return_inverse=True)[1].reshape(-1))  # names or numbers alike
    mask = same_class_pairs(codes)
    return mask | torch.eye(len(lab), dtype=torch.bool) if include_self else mask
