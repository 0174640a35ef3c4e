"""Supervised contrast with the class labels: every same-class pair of the batch is a positive. A diagnostic upper
bound of false-negative attraction, beside ``nce.nce_fn_mask=oracle`` for elimination; it reads every clip's class
label, so it runs on the built-in data only.

Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (``L_out``), on the max-pooled cross-modal logits of
EZ-VSL. With ``P(b) = {p : label[p] = label[b]}`` (``b`` included):

    row(b)        = -1 / |P(b)| * sum_{p in P(b)} log softmax_k(logits[b, k])[p]
    supcon_oracle = mean_b row(b) + the same over logits^T

(:func:`~fnac_lab.losses.multi_positive_nce` with :func:`~fnac_lab.losses.same_class_pairs`). Plain NCE during the
warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import multi_positive_nce, same_class_pairs
from .base import register_method
from .remedy import Remedy, RemedyOptions


@dataclass(frozen=True)
class SupconOracleOptions(RemedyOptions):
    pass


@register_method("supcon_oracle")
class SupconOracle(Remedy):
    """Multi-positive NCE with the same-class pairs, from the labels, as positives."""

    label = "SupCon (oracle)"
    colour = "#17becf"
    options_class = SupconOracleOptions
    term_labels = {"nce": "NCE", "supcon_oracle": "NCE with same-class positives"}
    reads_labels = True

    def remedy_term(self, logits: torch.Tensor, img: torch.Tensor, aud: torch.Tensor, sim: torch.Tensor,
                    labels: torch.Tensor | None) -> torch.Tensor:
        return multi_positive_nce(logits, same_class_pairs(labels))
