"""Hard-negative contrast: NCE whose negatives are reweighted towards the most similar ones.

Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021, on the max-pooled cross-modal logits of
EZ-VSL, in both directions. For a row ``b`` with ``pos = exp(logits[b, b])``, ``neg_k = exp(logits[b, k])`` over the
``N = B - 1`` other columns, importance ``w_k = exp(beta * logits[b, k])`` and the class prior ``tau_plus``:

    Ng(b)             = max( (N * sum_k w_k neg_k / sum_k w_k - N * tau_plus * pos) / (1 - tau_plus),  N exp(-1/tau) )
    hard_negative_nce = mean_b -log( pos / (pos + Ng(b)) )  + the same over logits^T

(:func:`~fnac_lab.losses.reweighted_negative_nce`). ``beta = 0`` is the debiased loss; ``tau_plus = 0`` reweights
without debiasing. Plain NCE during the warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..losses import reweighted_negative_nce
from .base import register_method
from .remedy import Remedy, RemedyOptions


@dataclass(frozen=True)
class HardNegativeNceOptions(RemedyOptions):
    beta: float = 1.0  #: concentration on hard negatives (0: uniform weights)
    tau_plus: float = 0.0  #: the debiasing class prior (0: none)

    def check(self) -> None:
        super().check()
        self.need(math.isfinite(self.beta) and self.beta >= 0, "beta", "must be a non-negative finite number")
        self.need(math.isfinite(self.tau_plus) and 0.0 <= self.tau_plus < 1.0, "tau_plus", "must be in [0, 1)")


@register_method("hard_negative_nce")
class HardNegativeNce(Remedy):
    """NCE with hard negatives weighted up."""

    label = "Hard-negative NCE"
    colour = "#e377c2"
    options_class = HardNegativeNceOptions
    term_labels = {"nce": "NCE", "hard_negative_nce": "Hard-negative NCE"}

    def remedy_term(self, logits: torch.Tensor, img: torch.Tensor, aud: torch.Tensor, sim: torch.Tensor,
                    labels: torch.Tensor | None) -> torch.Tensor:
        o = self.options
        return reweighted_negative_nce(logits, tau=self.tau, tau_plus=o.tau_plus, beta=o.beta)
