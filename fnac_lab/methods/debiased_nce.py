"""The debiased contrastive loss: NCE whose negative term subtracts the expected share of false negatives.

Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020, on the max-pooled cross-modal logits of EZ-VSL, in
both directions. For a row ``b`` with ``pos = exp(logits[b, b])``, ``neg_k = exp(logits[b, k])`` over the
``N = B - 1`` other columns and the class prior ``tau_plus``:

    Ng(b)        = max( (sum_k neg_k - N * tau_plus * pos) / (1 - tau_plus),  N * exp(-1 / tau) )
    debiased_nce = mean_b -log( pos / (pos + Ng(b)) )  + the same over logits^T

(:func:`~fnac_lab.losses.reweighted_negative_nce` with ``beta = 0``). Plain NCE during the warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..losses import reweighted_negative_nce
from .base import register_method
from .remedy import Remedy, RemedyOptions


@dataclass(frozen=True)
class DebiasedNceOptions(RemedyOptions):
    tau_plus: float = 0.1  #: the assumed probability that a negative shares the anchor's class

    def check(self) -> None:
        super().check()
        self.need(math.isfinite(self.tau_plus) and 0.0 <= self.tau_plus < 1.0, "tau_plus", "must be in [0, 1)")


@register_method("debiased_nce")
class DebiasedNce(Remedy):
    """NCE with the debiased negative term."""

    label = "Debiased NCE"
    colour = "#8c564b"
    options_class = DebiasedNceOptions
    term_labels = {"nce": "NCE", "debiased_nce": "Debiased NCE"}

    def remedy_term(self, logits: torch.Tensor, img: torch.Tensor, aud: torch.Tensor, sim: torch.Tensor,
                    labels: torch.Tensor | None) -> torch.Tensor:
        return reweighted_negative_nce(logits, tau=self.tau, tau_plus=self.options.tau_plus)
