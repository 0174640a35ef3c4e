"""How well an intra-modal similarity finds the same-class pairs (the false negatives) of training-sized batches:
precision and recall, R-precision, and the softmax mass an FNS target row puts on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from ..data.contracts import whole_batch
from ..models import Localiser
from .adjacency import batch_adjacency, embed_batch, same_class_mask

INTRA_MODAL = ("audio", "visual", "foreground")


def pair_scores(similarity: torch.Tensor | np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """Scores and same-class truth of the unordered pairs ``i < j`` of a symmetric ``[B, B]`` similarity."""
    sim = np.asarray(similarity, dtype=np.float64)
    lab = np.asarray(labels)
    i, j = np.triu_indices(len(lab), k=1)
    return sim[i, j], lab[i] == lab[j]


@dataclass
class PairRetrieval:
    """Precision and recall of "pair is same-class" predicted by thresholding a similarity.

    ``precision[t]`` / ``recall[t]``: over pairs scoring at least ``thresholds[t]`` (scikit-learn's curve);
    ``average_precision``: the area under it; ``r_precision``: precision among the ``R`` best-scored pairs,
    ``R`` the number of same-class pairs (there precision equals recall); ``base_rate``: the share of
    same-class pairs, the precision of a random score.
    """

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    average_precision: float
    r_precision: float
    base_rate: float
    auroc: float
    n_pairs: int
    n_same: int

    def summary(self) -> dict[str, float]:
        return {"average_precision": self.average_precision, "r_precision": self.r_precision,
                "base_rate": self.base_rate, "auroc": self.auroc, "n_pairs": self.n_pairs, "n_same": self.n_same}


def pair_precision_recall(scores: np.ndarray, is_same: np.ndarray) -> PairRetrieval:
    """:class:`PairRetrieval` of pair ``scores`` against the same-class truth ``is_same``."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    is_same = np.asarray(is_same, dtype=bool)
    n_same = int(is_same.sum())
    if n_same == 0 or n_same == len(is_same):
        raise ValueError("the scored pairs are all of one kind (same-class or not): the curves are undefined")
    precision, recall, thresholds = precision_recall_curve(is_same, scores)
    top = np.argsort(-scores, kind="stable")[:n_same]
    return PairRetrieval(precision=precision, recall=recall, thresholds=thresholds,
                         average_precision=float(average_precision_score(is_same, scores)),
                         r_precision=float(is_same[top].mean()), base_rate=float(is_same.mean()),
                         auroc=float(roc_auc_score(is_same, scores)),
                         n_pairs=len(scores), n_same=n_same)


def same_class_softmax_mass(similarity: torch.Tensor, labels) -> float:
    """Mean, over members with a same-class partner, of the row-softmax mass on those partners: how much of
    an FNS target distribution (``softmax(A)`` row) points at false negatives rather than at the member itself
    or at true negatives."""
    prob = torch.as_tensor(similarity, dtype=torch.float64).softmax(dim=1)
    mask = same_class_mask(labels)
    has_partner = mask.any(dim=1)
    if not has_partner.any():
        raise ValueError("no member of the batch has a same-class partner")
    return float((prob * mask).sum(dim=1)[has_partner].mean())


def _dataset_batches(dataset, batch_size: int, max_batches: int | None) -> Iterator[tuple[list[int], dict]]:
    n_batches = len(dataset) // batch_size
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    for b in range(n_batches):
        idx = list(range(b * batch_size, (b + 1) * batch_size))
        yield idx, whole_batch(dataset, idx)


def intramodal_retrieval(model: Localiser, dataset, *, batch_size: int, tau: float, tne_threshold: float | None = 0.6,
                         device: torch.device | str = "cpu", max_batches: int | None = None
                         ) -> tuple[pd.DataFrame, dict[str, PairRetrieval]]:
    """How well each intra-modal similarity finds the same-class pairs of training-sized batches.

    The split is cut into consecutive batches of ``batch_size`` (pairs only within a batch, as in training).
    Returns a table indexed by matrix (``audio``, ``visual``, ``foreground``) with average precision,
    R-precision, the base rate and the softmax mass on same-class partners, and the curves.
    """
    scores: dict[str, list[np.ndarray]] = {name: [] for name in INTRA_MODAL}
    truth: list[np.ndarray] = []
    mass: dict[str, list[float]] = {name: [] for name in INTRA_MODAL}
    for _, batch in _dataset_batches(dataset, batch_size, max_batches):
        img, aud = embed_batch(model, batch, device=device)
        adj = batch_adjacency(img, aud, tau=tau, tne_threshold=tne_threshold)
        labels = batch["label"].numpy()
        for name in INTRA_MODAL:
            s, same = pair_scores(getattr(adj, name), labels)
            scores[name].append(s)
            if same_class_mask(labels).any():
                mass[name].append(same_class_softmax_mass(getattr(adj, name), labels))
        truth.append(same)
    if not truth:
        raise ValueError(f"the split has fewer than batch_size={batch_size} samples")
    is_same = np.concatenate(truth)
    curves = {name: pair_precision_recall(np.concatenate(scores[name]), is_same) for name in INTRA_MODAL}
    table = pd.DataFrame({name: {**curves[name].summary(), "same_class_mass": float(np.mean(mass[name]))}
                          for name in INTRA_MODAL}).T
    return table, curves
