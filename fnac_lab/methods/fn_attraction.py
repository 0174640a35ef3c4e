"""False-negative attraction: the pairs detected as false negatives become positives (multi-positive NCE).

Huynh et al., "Boosting Contrastive Self-Supervised Learning with False Negative Cancellation", WACV 2022, on the
max-pooled cross-modal logits of EZ-VSL. With ``M`` the detected pairs (:class:`~fnac_lab.methods.remedy.
DetectionOptions`) and ``P(b) = {b} + {p : M[b, p]}``:

    row(b)         = -1 / |P(b)| * sum_{p in P(b)} log softmax_k(logits[b, k])[p]
    fn_attraction  = mean_b row(b) + the same over logits^T

(:func:`~fnac_lab.losses.multi_positive_nce`). Plain NCE during the warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import multi_positive_nce
from .base import register_method
from .remedy import DetectingRemedy, DetectionOptions


@dataclass(frozen=True)
class FnAttractionOptions(DetectionOptions):
    pass


@register_method("fn_attraction")
class FnAttraction(DetectingRemedy):
    """Multi-positive NCE with the detected false negatives as positives."""

    label = "FN attraction"
    colour = "#9467bd"
    options_class = FnAttractionOptions
    term_labels = {"nce": "NCE", "fn_attraction": "NCE with detected FN as positives"}

    def remedy_term(self, logits: torch.Tensor, img: torch.Tensor, aud: torch.Tensor, sim: torch.Tensor,
                    labels: torch.Tensor | None) -> torch.Tensor:
        return multi_positive_nce(logits, self.detected_pairs(img, aud, sim))
