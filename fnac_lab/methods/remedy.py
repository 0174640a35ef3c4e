"""What the label-free false-negative remedies share: a warm-up of plain NCE, then one term of their own.

A remedy reports two terms every epoch, ``nce`` (the published objective) and its own, and minimises ``nce`` alone
during ``warmup_epochs``, then its own term alone. Its warm-up is therefore its NCE twin's to the last digit: the same
graph, the same gradients. The detection-based remedies (``fn_elimination``, ``fn_attraction``) also share how they
find false negatives: :func:`~fnac_lab.losses.detect_false_negatives` over a
:func:`~fnac_lab.losses.detection_similarity` of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..coercion import ConfigError
from ..losses import (DETECTION_RULES, DETECTION_SIMILARITIES, detect_false_negatives, detection_similarity,
                      max_pooled_logits, nce_loss, same_class_pairs, similarity_maps)
from .base import Method, MethodOptions


@dataclass(frozen=True)
class RemedyOptions(MethodOptions):
    warmup_epochs: int = 2  #: plain-NCE epochs before the remedy's own term replaces it

    def check(self) -> None:
        self.need(self.warmup_epochs >= 0, "warmup_epochs", "must be non-negative")


@dataclass(frozen=True)
class DetectionOptions(RemedyOptions):
    detect_from: str = "audio"  #: audio, visual (frame mean), foreground, or product (audio x visual)
    rule: str = "topk"  #: topk (either side's k nearest), threshold (cosine above it), reciprocal (k-reciprocal)
    k: int = 1  #: neighbours per sample for topk and reciprocal
    threshold: float = 0.9  #: cosine above which a pair is detected, for rule=threshold

    def check(self) -> None:
        super().check()
        self.need(self.detect_from in DETECTION_SIMILARITIES, "detect_from",
                  f"must be one of {', '.join(DETECTION_SIMILARITIES)}")
        self.need(self.rule in DETECTION_RULES, "rule", f"must be one of {', '.join(DETECTION_RULES)}")
        self.need(self.k >= 1, "k", "must be a positive integer")
        self.need(math.isfinite(self.threshold) and -1.0 <= self.threshold <= 1.0, "threshold",
                  "must be a cosine in [-1, 1]")


class Remedy(Method):
    """Plain NCE for ``options.warmup_epochs`` epochs, then the term :attr:`term` alone. Subclasses set
    :attr:`term` (first key after ``nce`` in :attr:`term_labels`) and implement :meth:`remedy_term`."""

    @property
    def term(self) -> str:
        return [k for k in self.term_labels if k != "nce"][0]

    @property
    def warmup_epochs(self) -> int:
        return self.options.warmup_epochs

    def remedy_term(self, logits: torch.Tensor, img: torch.Tensor, aud: torch.Tensor, sim: torch.Tensor,
                    labels: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def terms(self, img: torch.Tensor, aud: torch.Tensor, *, labels: torch.Tensor | None = None,
              sim: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if labels is None and self.needs_labels:
            raise ValueError(f"method {self.name} needs the batch's class labels")
        sim = similarity_maps(img, aud, self.tau) if sim is None else sim
        logits = max_pooled_logits(sim)
        return {"nce": nce_loss(logits), self.term: self.remedy_term(logits, img, aud, sim, labels)}

    def weights(self, epoch: int) -> dict[str, float]:
        return {"nce": 1.0} if epoch < self.options.warmup_epochs else {self.term: 1.0}

    def check_epochs(self, epochs: int) -> None:
        if self.options.warmup_epochs >= epochs:
            raise ConfigError(f"{self.name}.warmup_epochs={self.options.warmup_epochs} with epochs={epochs}: the "
                              f"remedy would never be used; raise epochs, lower {self.name}.warmup_epochs, or "
                              f"train method=nce")


class DetectingRemedy(Remedy):
    """A remedy that acts on the pairs it detects as false negatives (:class:`DetectionOptions`). On data with class
    labels it reports, every epoch, the precision and recall of its detection against the batches' same-class pairs
    (``fn_precision``, ``fn_recall``; None when nothing was detected) and the share of the batches' off-diagonal
    pairs it detects (``fn_detected_share``), each pooled over the epoch's pairs."""

    monitors = True

    def detected_pairs(self, img: torch.Tensor, aud: torch.Tensor, sim: torch.Tensor | None) -> torch.Tensor:
        """``[B, B]`` bool: the batch's pairs taken for false negatives (symmetric, none on the diagonal)."""
        o = self.options
        similarity = detection_similarity(img, aud, o.detect_from, tau=self.tau, sim=sim)
        return detect_false_negatives(similarity, o.rule, k=o.k, threshold=o.threshold)

    def monitor(self, img: torch.Tensor, aud: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        detected, same = self.detected_pairs(img, aud, None), same_class_pairs(labels)
        b = labels.shape[0]
        return {"detected": detected.sum().double(), "detected_same_class": (detected & same).sum().double(),
                "same_class": same.sum().double(), "pairs": detected.new_tensor(b * (b - 1), dtype=torch.float64)}

    def monitor_record(self, sums: Mapping[str, float]) -> dict[str, Any]:
        hit = sums["detected_same_class"]
        return {"fn_precision": hit / sums["detected"] if sums["detected"] else None,
                "fn_recall": hit / sums["same_class"] if sums["same_class"] else None,
                "fn_detected_share": sums["detected"] / sums["pairs"]}
