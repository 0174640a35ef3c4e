"""FNAC objectives: contrastive NCE, false-negative suppression (FNS) and true-negative emphasis (TNE).

Sun et al., "Learning Audio-Visual Source Localization via False Negative Aware Contrastive Learning",
CVPR 2023. Notation, with ``img`` a channel-normalised visual map ``[B, C, H, W]`` and ``aud`` a
normalised audio embedding ``[B, C]``:

    S[b, k, h, w] = <img[b, :, h, w], aud[k]> / tau
    logits[b, k]  = max_{h, w} S[b, k, h, w]

:func:`batch_affinities` builds the ``[B, B]`` matrices every term compares; the methods of :mod:`fnac_lab.methods`
combine these functions into their terms. Everything here is pure: the distributed gather lives in
:mod:`fnac_lab.distributed`, so a caller that wants global negatives gathers ``img`` and ``aud`` first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .utils import normalise_maps

DISTANCES = ("l1", "l2", "smooth_l1")
#: ``none``: the published NCE; ``oracle``: same-class pairs leave its denominators (needs class labels).
NCE_FN_MASKS = ("none", "oracle")
#: ``learned``: the published intra-modal similarity targets; ``oracle``: the class-label adjacency.
FN_TARGETS = ("learned", "oracle")
#: The published threshold of TNE's foreground mask (also the foreground pooling of false-negative detection).
TNE_THRESHOLD = 0.6
#: The intra-modal similarities from which a label-free remedy detects false negatives (:func:`detection_similarity`).
DETECTION_SIMILARITIES = ("audio", "visual", "foreground", "product")
#: How detected pairs are chosen from that similarity (:func:`detect_false_negatives`).
DETECTION_RULES = ("topk", "threshold", "reciprocal")


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


def tne_mask(own: torch.Tensor, threshold: float | None = TNE_THRESHOLD) -> torch.Tensor:
    """The foreground mask of TNE, ``[B, H, W]``: ``1[M > threshold]`` with ``M`` the own-pair map ``S[b, b]``
    min-max normalised per sample as ``(x - min) / (max - min + 1e-5)``; with ``threshold=None`` the soft mask
    ``M`` itself."""
    norm = normalise_maps(own, eps=1e-5)
    return norm if threshold is None else (norm > threshold).to(own.dtype)


def foreground_features(img: torch.Tensor, own: torch.Tensor, threshold: float | None = TNE_THRESHOLD) -> torch.Tensor:
    """Foreground-pooled visual features ``f[b] = mean_{h,w} img[b] * mask[b]`` as ``[B, C]``, with the
    :func:`tne_mask` of the own-pair maps ``own``. The mean divides by ``H * W`` (not by the mask area), as
    published."""
    mask = tne_mask(own, threshold).to(img.dtype)
    return (img * mask.unsqueeze(1)).mean(dim=(2, 3))


def intra_modal_embeddings(img: torch.Tensor, aud: torch.Tensor, tau: float,
                           tne_threshold: float | None = TNE_THRESHOLD) -> dict[str, torch.Tensor]:
    """Each sample's embedding in the three intra-modal similarities FNAC compares, ``[B, C]`` each: ``audio``
    (``aud``), ``visual`` (the frame mean ``v``) and ``foreground`` (:func:`foreground_features` of the own-pair
    maps at ``tau``)."""
    own = own_maps(similarity_maps(img, aud, tau))
    return {"audio": aud, "visual": img.mean(dim=(2, 3)), "foreground": foreground_features(img, own, tne_threshold)}


@dataclass
class BatchAffinities:
    """The four ``[B, B]`` matrices of one batch that the FNAC terms compare (logit scale), with the own-pair maps
    ``S[b, b]`` ``[B, h, w]`` and the TNE foreground mask ``[B, h, w]`` they came from (Sun et al., CVPR 2023,
    section 3). With ``v`` the spatial mean of ``img`` and ``f`` its foreground-pooled features
    (:func:`foreground_features`):

        audio       A_aud[b, k] = <aud[b], aud[k]> / t
        visual      A_img[b, k] = <v[b], v[k]> / t
        cross       logits[b, k] = max_hw S[b, k, h, w]      image b against audio k, at tau
        foreground  A_fg[b, k] = <f[b], f[k]> / t
    """

    audio: torch.Tensor
    visual: torch.Tensor
    cross: torch.Tensor
    foreground: torch.Tensor
    own: torch.Tensor
    mask: torch.Tensor

    def matrices(self) -> dict[str, torch.Tensor]:
        return {"audio": self.audio, "visual": self.visual, "cross": self.cross, "foreground": self.foreground}

    def softmax(self) -> dict[str, torch.Tensor]:
        """Row-wise softmax of each matrix: the distributions the FNAC distances compare."""
        return {name: m.softmax(dim=1) for name, m in self.matrices().items()}


def batch_affinities(img: torch.Tensor, aud: torch.Tensor, *, tau: float, sim: torch.Tensor | None = None,
                     tne_threshold: float | None = TNE_THRESHOLD, target_tau: float | None = None,
                     normalise_targets: bool = False) -> BatchAffinities:
    """The :class:`BatchAffinities` of normalised ``img`` ``[B, C, h, w]`` and ``aud`` ``[B, C]``. The intra-modal
    matrices divide by ``t = target_tau`` (None: ``tau``, published); ``normalise_targets`` L2-normalises ``v`` and
    ``f`` before their self-similarity (published: not). ``sim`` is :func:`similarity_maps` at ``tau`` when the
    caller has it."""
    sim = similarity_maps(img, aud, tau) if sim is None else sim
    t = tau if target_tau is None else target_tau
    own = own_maps(sim)
    mask = tne_mask(own, tne_threshold).to(img.dtype)
    v = img.mean(dim=(2, 3))
    f = (img * mask.unsqueeze(1)).mean(dim=(2, 3))  # foreground_features, with the mask kept
    if normalise_targets:
        v, f = F.normalize(v, dim=1), F.normalize(f, dim=1)
    return BatchAffinities(audio=aud @ aud.t() / t, visual=v @ v.t() / t, cross=max_pooled_logits(sim),
                           foreground=f @ f.t() / t, own=own, mask=mask)


def detection_similarity(img: torch.Tensor, aud: torch.Tensor, source: str, *, tau: float,
                         sim: torch.Tensor | None = None, tne_threshold: float | None = TNE_THRESHOLD) -> torch.Tensor:
    """``[B, B]`` cosine similarity between the batch's samples in one of :data:`DETECTION_SIMILARITIES`, detached
    (detection steers the loss; it is not trained): ``audio`` ``<aud[b], aud[k]>``; ``visual`` and ``foreground``
    the cosines of the frame mean ``v`` and of the foreground-pooled ``f`` (:func:`intra_modal_embeddings`);
    ``product`` ``max(0, cos_audio) * max(0, cos_visual)``, a pair alike in both modalities. ``sim`` is
    :func:`similarity_maps` at ``tau`` when the caller has it (only ``foreground`` reads it)."""

    def cosine(e: torch.Tensor) -> torch.Tensor:
        e = F.normalize(e, dim=1)
        return e @ e.t()

    with torch.no_grad():
        if source == "audio":
            return cosine(aud)
        if source == "visual":
            return cosine(img.mean(dim=(2, 3)))
        if source == "foreground":
            own = own_maps(similarity_maps(img, aud, tau) if sim is None else sim)
            return cosine(foreground_features(img, own, tne_threshold))
        if source == "product":
            return cosine(aud).clamp(min=0) * cosine(img.mean(dim=(2, 3))).clamp(min=0)
    raise ValueError(f"unknown detection similarity {source!r} (one of {', '.join(DETECTION_SIMILARITIES)})")


def detect_false_negatives(similarity: torch.Tensor, rule: str, *, k: int = 1,
                           threshold: float = 0.9) -> torch.Tensor:
    """``[B, B]`` bool, symmetric, False on the diagonal: the pairs taken for false negatives by ``rule``
    (:data:`DETECTION_RULES`) over ``similarity`` ``[B, B]``:

        topk        j among the k most similar of i (i excluded), or i among those of j
        threshold   similarity[i, j] > threshold
        reciprocal  j among the k most similar of i, and i among those of j (k-reciprocal neighbours)

    Ties among the nearest go to the lower index (a stable sort); ``k`` is capped at ``B - 1``."""
    n = len(similarity)
    own = torch.eye(n, dtype=torch.bool, device=similarity.device)
    if rule == "threshold":
        return (similarity > threshold) & ~own
    if rule not in ("topk", "reciprocal"):
        raise ValueError(f"unknown detection rule {rule!r} (one of {', '.join(DETECTION_RULES)})")
    nearest = torch.zeros_like(own)
    if n > 1 and k > 0:
        ranked = similarity.masked_fill(own, float("-inf")).sort(dim=1, descending=True, stable=True).indices
        ranked = ranked[:, :min(k, n - 1)]
        nearest.scatter_(1, ranked, True)
    return nearest | nearest.t() if rule == "topk" else nearest & nearest.t()


def multi_positive_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss in which every pair of ``positives`` (``[B, B]`` bool, symmetric; the diagonal is
    always a positive) attracts like the own pair, the supervised-contrastive form (Khosla et al., NeurIPS 2020,
    ``L_out``), used for false-negative attraction (Huynh et al., WACV 2022):

        row(b) = -1 / |P(b)| * sum_{p in P(b)} log softmax_k(logits[b, k])[p],   P(b) = {b} + {p: positives[b, p]}
        loss   = mean_b row(b) over ``logits`` + the same over ``logits^T``

    With no positive beside the diagonal it is :func:`nce_loss`."""
    pos = positives | torch.eye(len(logits), dtype=torch.bool, device=logits.device)

    def side(lg: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        weight = p.to(lg.dtype) / p.sum(dim=1, keepdim=True)
        return -(weight * lg.log_softmax(dim=1)).sum(dim=1).mean()

    return side(logits, pos) + side(logits.t(), pos.t())


def reweighted_negative_nce(logits: torch.Tensor, *, tau: float, tau_plus: float = 0.0,
                            beta: float = 0.0) -> torch.Tensor:
    """Symmetric contrastive loss with a debiased, hard-negative-reweighted negative term, over the max-pooled
    logits. For a row ``b`` with ``pos = exp(logits[b, b])``, ``neg_k = exp(logits[b, k])`` over the ``N = B - 1``
    other columns and importance ``w_k = exp(beta * logits[b, k])``:

        Ng(b)  = max( (N * sum_k w_k neg_k / sum_k w_k  -  N * tau_plus * pos) / (1 - tau_plus),  N * exp(-1 / tau) )
        row(b) = -log( pos / (pos + Ng(b)) )
        loss   = mean_b row(b) over ``logits`` + the same over ``logits^T``

    ``tau_plus`` is the class prior of the debiased contrastive loss (Chuang et al., NeurIPS 2020), ``beta`` the
    concentration on hard negatives (Robinson et al., ICLR 2021); ``exp(-1 / tau)`` is the smallest ``neg_k`` a
    cosine at temperature ``tau`` can give. With ``tau_plus = beta = 0`` the clamp aside, it is :func:`nce_loss`.
    The importance weights are not detached, as published."""
    n = len(logits) - 1
    own = torch.eye(n + 1, dtype=torch.bool, device=logits.device)

    def side(lg: torch.Tensor) -> torch.Tensor:
        pos = lg.diagonal()
        def log_sum_exp_others(x: torch.Tensor) -> torch.Tensor:
            return x.masked_fill(own, float("-inf")).logsumexp(dim=1)

        # log of N * sum_k w_k neg_k / sum_k w_k, in the log domain
        log_reweighted = math.log(n) + log_sum_exp_others((1 + beta) * lg) - log_sum_exp_others(beta * lg)
        neg = (log_reweighted.exp() - n * tau_plus * pos.exp()) / (1 - tau_plus)
        neg = neg.clamp(min=n * math.exp(-1 / tau))
        return (torch.log(pos.exp() + neg) - pos).mean()

    return side(logits) + side(logits.t())
