"""FNAC objectives: contrastive NCE, false-negative suppression (FNS) and true-negative emphasis (TNE).

Sun et al., "Learning Audio-Visual Source Localization via False Negative Aware Contrastive Learning",
CVPR 2023. Notation, with ``img`` a channel-normalised visual map ``[B, C, H, W]`` and ``aud`` a
normalised audio embedding ``[B, C]``:

    S[b, k, h, w] = <img[b, :, h, w], aud[k]> / tau
    logits[b, k]  = max_{h, w} S[b, k, h, w]

:class:`FnacLoss` computes the four terms and their weighted total; the functions it is built of are pure and
public for the notebooks. The distributed gather lives in :mod:`fnac_lab.distributed`, so a caller that wants
global negatives gathers ``img`` and ``aud`` first and hands them to the same loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .utils import normalise_maps

DISTANCES = ("l1", "l2", "smooth_l1")
#: ``none``: the published NCE; ``oracle``: same-class pairs leave its denominators (needs class labels).
NCE_FN_MASKS = ("none", "oracle")
#: ``learned``: the published intra-modal similarity targets; ``oracle``: the class-label adjacency.
FN_TARGETS = ("learned", "oracle")


def similarity_maps(img: torch.Tensor, aud: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-modal similarity ``S[b, k, h, w] = <img[b, :, h, w], aud[k]> / tau`` as ``[B, B, H, W]``."""
    return torch.einsum("bchw,kc->bkhw", img, aud) / tau


def max_pooled_logits(sim: torch.Tensor) -> torch.Tensor:
    """``logits[b, k] = max_{h,w} S[b, k, h, w]`` (multiple-instance max over cells)."""
    return sim.flatten(2).amax(dim=2)


def own_maps(sim: torch.Tensor) -> torch.Tensor:
    """The own-pair maps ``S[b, b]`` as ``[B, H, W]``: the localisation map of each sample."""
    idx = torch.arange(sim.shape[0], device=sim.device)
    return sim[idx, idx]


def nce_loss(logits: torch.Tensor, fn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE: ``CE(logits, diag) + CE(logits^T, diag)``, each a mean over the batch (EZ-VSL).

    ``fn_mask`` (``[B, B]`` bool, symmetric, False on the diagonal) marks pairs known to be false negatives: they
    leave both denominators (false-negative elimination, Huynh et al., "Boosting Contrastive Self-Supervised
    Learning with False Negative Cancellation", WACV 2022).
    """
    target = torch.arange(logits.shape[0], device=logits.device)
    if fn_mask is not None:
        logits = logits.masked_fill(fn_mask, float("-inf"))
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)


def same_class_pairs(labels: torch.Tensor) -> torch.Tensor:
    """``[B, B]`` bool: ``labels[i] == labels[j]`` for ``i != j`` (the false negatives of a batch)."""
    same = labels[:, None] == labels[None, :]
    return same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)


def class_target_distribution(labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, B]`` rows uniform over the batch's samples of the same class, the sample itself included: the target
    distribution FNS and TNE would have with perfect false-negative knowledge."""
    same = (labels[:, None] == labels[None, :]).to(dtype)
    return same / same.sum(dim=1, keepdim=True)


def distribution_gap(p: torch.Tensor, q: torch.Tensor, distance: str = "l1") -> torch.Tensor:
    """``D(p, q)`` of two row-distribution matrices, averaged over all ``B x B`` entries: ``"l1"`` (mean absolute
    difference, the published choice), ``"l2"`` (mean squared difference) or ``"smooth_l1"`` (Huber, beta 1)."""
    if distance == "l1":
        return F.l1_loss(p, q)
    if distance == "l2":
        return F.mse_loss(p, q)
    if distance == "smooth_l1":
        return F.smooth_l1_loss(p, q, beta=1.0)
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def distribution_distance(target: torch.Tensor, pred: torch.Tensor, distance: str = "l1") -> torch.Tensor:
    """``D(softmax_row(target), softmax_row(pred))`` of two logit matrices (see :func:`distribution_gap`)."""
    return distribution_gap(target.softmax(dim=1), pred.softmax(dim=1), distance)


def tne_mask(own: torch.Tensor, threshold: float | None = 0.6) -> torch.Tensor:
    """The foreground mask of TNE, ``[B, H, W]``: ``1[M > threshold]`` with ``M`` the own-pair map ``S[b, b]``
    min-max normalised per sample as ``(x - min) / (max - min + 1e-5)``; with ``threshold=None`` the soft mask
    ``M`` itself."""
    norm = normalise_maps(own, eps=1e-5)
    return norm if threshold is None else (norm > threshold).to(own.dtype)


def foreground_features(img: torch.Tensor, own: torch.Tensor, threshold: float | None = 0.6) -> torch.Tensor:
    """Foreground-pooled visual features ``f[b] = mean_{h,w} img[b] * mask[b]`` as ``[B, C]``, with the
    :func:`tne_mask` of the own-pair maps ``own``. The mean divides by ``H * W`` (not by the mask area), as
    published."""
    mask = tne_mask(own, threshold).to(img.dtype)
    return (img * mask.unsqueeze(1)).mean(dim=(2, 3))


TERMS = ("nce", "fns_audio", "fns_visual", "tne")


class FnacLoss(nn.Module):
    """The FNAC objective: contrastive NCE, false-negative suppression (FNS) on both sides and true-negative
    emphasis (TNE), the one entry point of this module's terms. Sun et al., "Learning Audio-Visual Source
    Localization via False Negative Aware Contrastive Learning", CVPR 2023.

    With ``S`` and ``logits`` as in this module's docstring, ``A_aud = aud aud^T / tau``, ``A_img = v v^T / tau``
    (``v`` the spatial mean of ``img``, not re-normalised) and ``A_fg = f f^T / tau`` (``f`` from
    :func:`foreground_features`):

        nce        = CE(logits, diag) + CE(logits^T, diag)
        fns_audio  = D(softmax(A_aud), softmax(logits))      # false-negative suppression, audio side
        fns_visual = D(softmax(A_img), softmax(logits))      # false-negative suppression, visual side
        tne        = D(softmax(A_aud), softmax(A_fg))        # true-negative emphasis
        total      = nce + w_fns_audio fns_audio + w_fns_visual fns_visual + w_tne tne   (nce alone in warm-up)

    A weight of 0 switches its term off in ``total``; every term is still computed and returned, so a run
    reports what its switched-off terms would have been. Nothing is detached, as published;
    ``detach_targets=True`` stops gradients through the intra-modal targets ``A_aud`` and ``A_img`` (a
    deviation: at tau = 0.03 their gradient can push same-class audio apart and collapse training from scratch).

    Study options, all off by default: ``normalise_targets`` L2-normalises ``v`` and ``f`` before their
    self-similarity; ``target_tau`` divides ``A_aud``, ``A_img`` and ``A_fg`` by its own temperature instead of
    ``tau`` (the cross-modal logits keep ``tau``). Two diagnostics read the batch's class ``labels``:
    ``nce_fn_mask="oracle"`` drops the same-class pairs from both NCE denominators (:func:`nce_loss`), and
    ``fn_targets="oracle"`` replaces ``softmax(A_aud)`` and ``softmax(A_img)`` by
    :func:`class_target_distribution` in all three terms (FNS-audio and FNS-visual are then the same term).

    The module holds no parameters and no state: the distributed gather stays with the caller
    (:mod:`fnac_lab.distributed`), which hands in the gathered ``img`` and ``aud``.
    """

    def __init__(self, *, tau: float = 0.03, w_fns_audio: float = 100.0, w_fns_visual: float = 100.0,
                 w_tne: float = 100.0, tne_threshold: float | None = 0.6, distance: str = "l1",
                 detach_targets: bool = False, normalise_targets: bool = False, target_tau: float | None = None,
                 nce_fn_mask: str = "none", fn_targets: str = "learned"):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if nce_fn_mask not in NCE_FN_MASKS or fn_targets not in FN_TARGETS:
            raise ValueError(f"nce_fn_mask must be one of {NCE_FN_MASKS} and fn_targets one of {FN_TARGETS}, "
                             f"got {nce_fn_mask!r} and {fn_targets!r}")
        self.tau, self.tne_threshold, self.distance = tau, tne_threshold, distance
        self.weights = {"fns_audio": w_fns_audio, "fns_visual": w_fns_visual, "tne": w_tne}
        self.detach_targets, self.normalise_targets, self.target_tau = detach_targets, normalise_targets, target_tau
        self.nce_fn_mask, self.fn_targets = nce_fn_mask, fn_targets

    @property
    def needs_labels(self) -> bool:
        """Whether the terms read the batch's class labels (the oracle diagnostics)."""
        return "oracle" in (self.nce_fn_mask, self.fn_targets)

    def terms(self, img: torch.Tensor, aud: torch.Tensor, *, labels: torch.Tensor | None = None,
              sim: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The four terms of :data:`TERMS` as scalar tensors. ``sim`` is :func:`similarity_maps` of ``img`` and
        ``aud`` when the caller has it already (it runs once per step: the NCE logits, the FNS target and the TNE
        mask all come from it)."""
        if labels is None and self.needs_labels:
            raise ValueError("the oracle diagnostics need the batch's class labels")
        sim = similarity_maps(img, aud, self.tau) if sim is None else sim
        t = self.tau if self.target_tau is None else self.target_tau
        logits = max_pooled_logits(sim)
        aud_aff = aud @ aud.t() / t
        v = img.mean(dim=(2, 3))
        f = foreground_features(img, own_maps(sim), self.tne_threshold)
        if self.normalise_targets:
            v, f = F.normalize(v, dim=1), F.normalize(f, dim=1)
        img_aff = v @ v.t() / t
        fg_aff = f @ f.t() / t
        if self.detach_targets:
            aud_aff, img_aff = aud_aff.detach(), img_aff.detach()
        nce = nce_loss(logits, same_class_pairs(labels) if self.nce_fn_mask == "oracle" else None)
        if self.fn_targets == "oracle":
            target = class_target_distribution(labels, logits.dtype)
            pred = logits.softmax(dim=1)
            return {"nce": nce, "fns_audio": distribution_gap(target, pred, self.distance),
                    "fns_visual": distribution_gap(target, pred, self.distance),
                    "tne": distribution_gap(target, fg_aff.softmax(dim=1), self.distance)}
        return {
            "nce": nce,
            "fns_audio": distribution_distance(aud_aff, logits, self.distance),
            "fns_visual": distribution_distance(img_aff, logits, self.distance),
            "tne": distribution_distance(aud_aff, fg_aff, self.distance),
        }

    def total(self, terms: dict[str, torch.Tensor], *, warmup: bool = False) -> torch.Tensor:
        """``nce`` during the warm-up, else ``nce`` plus the weighted FNAC terms."""
        loss = terms["nce"]
        if not warmup:
            loss = loss + self.weights["fns_audio"] * terms["fns_audio"] \
                + self.weights["fns_visual"] * terms["fns_visual"] + self.weights["tne"] * terms["tne"]
        return loss

    def forward(self, img: torch.Tensor, aud: torch.Tensor, *, labels: torch.Tensor | None = None,
                sim: torch.Tensor | None = None, warmup: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, terms)`` for one batch (see :meth:`terms` and :meth:`total`)."""
        terms = self.terms(img, aud, labels=labels, sim=sim)
        return self.total(terms, warmup=warmup), terms
