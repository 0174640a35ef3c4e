"""False-negative elimination: NCE in which the pairs detected as false negatives leave both denominators.

Huynh et al., "Boosting Contrastive Self-Supervised Learning with False Negative Cancellation", WACV 2022, on the
max-pooled cross-modal logits of EZ-VSL. With ``M`` the detected pairs (:class:`~fnac_lab.methods.remedy.
DetectionOptions`: a per-row top-k, a threshold or k-reciprocal neighbours over an intra-modal cosine similarity,
detached):

    fn_elimination = CE(logits masked by M, diag) + CE(logits^T masked by M, diag)

where a masked entry is ``-inf`` (the pair is neither positive nor negative). Plain NCE during the warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import nce_loss
from .base import register_method
from .remedy import DetectingRemedy, DetectionOptions


@dataclass(frozen=True)
class FnEliminationOptions(DetectionOptions):
    pass


@register_method("fn_elimination")
class FnElimination(DetectingRemedy):
    """NCE without the detected false negatives in its denominators."""

    label = "FN elimination"
    colour = "#2ca02c"
    options_class = FnEliminationOptions
    term_labels = {"nce": "NCE", "fn_elimination": "NCE without detected FN"}

    def remedy_term(self, logits: torch.Tensor, img: torch.Tensor, aud: torch.Tensor, sim: torch.Tensor,
                    labels: torch.Tensor | None) -> torch.Tensor:
        return nce_loss(logits, self.detected_pairs(img, aud, sim))
