"""NCE: the symmetric contrastive objective of EZ-VSL, the baseline every false-negative remedy is measured against.

Mo and Morgado, "Localizing Visual Sounds the Easy Way", ECCV 2022. With ``logits[b, k] = max_hw <img[b, :, h, w],
aud[k]> / tau`` (multiple-instance max over the visual map's cells):

    nce = CE(logits, diag) + CE(logits^T, diag)

The option ``nce_fn_mask="oracle"`` is a diagnostic: the batch's same-class pairs, read from the class labels, leave
both denominators (false-negative elimination with perfect knowledge).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import NCE_FN_MASKS, max_pooled_logits, nce_loss, same_class_pairs, similarity_maps
from .base import Method, MethodOptions, register_method


@dataclass(frozen=True)
class NceOptions(MethodOptions):
    nce_fn_mask: str = "none"  #: diagnostic: oracle = same-class pairs leave the NCE denominators (needs labels)

    def check(self) -> None:
        self.need(self.nce_fn_mask in NCE_FN_MASKS, "nce_fn_mask", f"must be one of {', '.join(NCE_FN_MASKS)}")


@register_method("nce")
class Nce(Method):
    """Symmetric InfoNCE over the max-pooled cross-modal logits (EZ-VSL); one term, ``nce``, weight 1."""

    label = "NCE"
    colour = "#1f77b4"
    options_class = NceOptions
    term_labels = {"nce": "NCE"}

    def labelled_options(self) -> list[str]:
        return ["nce_fn_mask"] if self.options.nce_fn_mask == "oracle" else []

    def terms(self, img: torch.Tensor, aud: torch.Tensor, *, labels: torch.Tensor | None = None,
              sim: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if labels is None and self.needs_labels:
            raise ValueError("nce.nce_fn_mask=oracle needs the batch's class labels")
        sim = similarity_maps(img, aud, self.tau) if sim is None else sim
        mask = same_class_pairs(labels) if self.options.nce_fn_mask == "oracle" else None
        return {"nce": nce_loss(max_pooled_logits(sim), mask)}

    def weights(self, epoch: int) -> dict[str, float]:
        return {"nce": 1.0}
