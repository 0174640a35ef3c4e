"""FNAC: contrastive NCE with false-negative suppression (FNS) on both sides and true-negative emphasis (TNE).

Sun et al., "Learning Audio-Visual Source Localization via False Negative Aware Contrastive Learning", CVPR 2023.
With the matrices of :class:`~fnac_lab.losses.BatchAffinities` (``A_aud``, ``A_img``, ``A_fg`` and the cross-modal
``logits``) and ``D`` a distance between row distributions (:func:`~fnac_lab.losses.distribution_gap`):

    nce        = CE(logits, diag) + CE(logits^T, diag)
    fns_audio  = D(softmax(A_aud), softmax(logits))      # false-negative suppression, audio side
    fns_visual = D(softmax(A_img), softmax(logits))      # false-negative suppression, visual side
    tne        = D(softmax(A_aud), softmax(A_fg))        # true-negative emphasis
    total      = nce + w_fns_audio fns_audio + w_fns_visual fns_visual + w_tne tne   (nce alone in the warm-up)

A weight of 0 switches its term off; every term is still computed and reported. Nothing is detached, as published;
``detach_targets`` stops gradients through ``A_aud`` and ``A_img`` (a deviation: at tau = 0.03 their gradient can
push same-class audio apart and collapse training from scratch). Study options, off by default:
``normalise_targets`` L2-normalises ``v`` and ``f`` before their self-similarity, ``target_tau`` gives the
intra-modal matrices their own temperature. Diagnostics that read the class labels: ``nce_fn_mask="oracle"`` drops
the same-class pairs from both NCE denominators, ``fn_targets="oracle"`` replaces ``softmax(A_aud)`` and
``softmax(A_img)`` by :func:`~fnac_lab.losses.class_target_distribution` in all three terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..coercion import ConfigError
from ..losses import (DISTANCES, FN_TARGETS, NCE_FN_MASKS, TNE_THRESHOLD, batch_affinities,
                      class_target_distribution, distribution_distance, distribution_gap, nce_loss, same_class_pairs)
from .base import Method, MethodOptions, register_method

#: FNAC's weighted terms, beside ``nce``, with how figures title them.
FNAC_TERMS = {"fns_audio": "FNS audio", "fns_visual": "FNS visual", "tne": "TNE"}


@dataclass(frozen=True)
class FnacOptions(MethodOptions):
    w_fns_audio: float = 100.0
    w_fns_visual: float = 100.0
    w_tne: float = 100.0
    warmup_epochs: int = 3  #: NCE-only epochs before the FNAC terms join
    tne_threshold: Optional[float] = TNE_THRESHOLD  #: None = soft mask
    distance: str = "l1"
    detach_targets: bool = False  #: deviation: stop gradients through the intra-modal similarity targets
    normalise_targets: bool = False  #: study: L2-normalise v and f before their self-similarity (published: not)
    target_tau: Optional[float] = None  #: study: temperature of the intra-modal similarities (None = tau, published)
    nce_fn_mask: str = "none"  #: diagnostic: oracle = same-class pairs leave the NCE denominators (needs labels)
    fn_targets: str = "learned"  #: diagnostic: oracle = class-label adjacency as FNS / TNE target (needs labels)

    def check(self) -> None:
        for name in ("w_fns_audio", "w_fns_visual", "w_tne"):
            value = getattr(self, name)
            self.need(math.isfinite(value) and value >= 0, name, "must be a non-negative finite number")
        self.need(self.warmup_epochs >= 0, "warmup_epochs", "must be non-negative")
        self.need(self.tne_threshold is None or 0.0 <= self.tne_threshold < 1.0, "tne_threshold",
                  "must be in [0, 1) or 'soft'")
        self.need(self.distance in DISTANCES, "distance", f"must be one of {', '.join(DISTANCES)}")
        self.need(self.target_tau is None or (math.isfinite(self.target_tau) and self.target_tau > 0), "target_tau",
                  "must be a positive finite number, or none (= tau)")
        self.need(self.nce_fn_mask in NCE_FN_MASKS, "nce_fn_mask", f"must be one of {', '.join(NCE_FN_MASKS)}")
        self.need(self.fn_targets in FN_TARGETS, "fn_targets", f"must be one of {', '.join(FN_TARGETS)}")

    @property
    def weights(self) -> dict[str, float]:
        return {"fns_audio": self.w_fns_audio, "fns_visual": self.w_fns_visual, "tne": self.w_tne}


@register_method("fnac")
class Fnac(Method):
    """The published FNAC objective (the module docstring gives its equations)."""

    label = "FNAC"
    colour = "#d62728"
    options_class = FnacOptions
    term_labels = {"nce": "NCE", **FNAC_TERMS}

    def labelled_options(self) -> list[str]:
        return [name for name in ("nce_fn_mask", "fn_targets") if getattr(self.options, name) == "oracle"]

    @property
    def foreground_threshold(self) -> float | None:
        return self.options.tne_threshold

    @property
    def warmup_epochs(self) -> int:
        return self.options.warmup_epochs

    @property
    def active(self) -> bool:
        """Whether any FNAC weight is above 0 (with all three at 0 the run trains NCE alone)."""
        return any(w > 0 for w in self.options.weights.values())

    def terms(self, img: torch.Tensor, aud: torch.Tensor, *, labels: torch.Tensor | None = None,
              sim: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        o = self.options
        if labels is None and self.needs_labels:
            raise ValueError("the oracle diagnostics (fnac.nce_fn_mask, fnac.fn_targets) need the batch's class labels")
        a = batch_affinities(img, aud, tau=self.tau, sim=sim, tne_threshold=o.tne_threshold,
                             target_tau=o.target_tau, normalise_targets=o.normalise_targets)
        aud_aff, img_aff = (a.audio.detach(), a.visual.detach()) if o.detach_targets else (a.audio, a.visual)
        nce = nce_loss(a.cross, same_class_pairs(labels) if o.nce_fn_mask == "oracle" else None)
        if o.fn_targets == "oracle":
            target = class_target_distribution(labels, a.cross.dtype)
            pred = a.cross.softmax(dim=1)
            return {"nce": nce, "fns_audio": distribution_gap(target, pred, o.distance),
                    "fns_visual": distribution_gap(target, pred, o.distance),
                    "tne": distribution_gap(target, a.foreground.softmax(dim=1), o.distance)}
        return {"nce": nce,
                "fns_audio": distribution_distance(aud_aff, a.cross, o.distance),
                "fns_visual": distribution_distance(img_aff, a.cross, o.distance),
                "tne": distribution_distance(aud_aff, a.foreground, o.distance)}

    def weights(self, epoch: int) -> dict[str, float]:
        """``nce`` alone during the warm-up, then ``nce`` beside the three weighted FNAC terms."""
        if epoch < self.options.warmup_epochs:
            return {"nce": 1.0}
        return {"nce": 1.0, **self.options.weights}

    def epoch_record(self, epoch: int) -> dict[str, Any]:
        """``fnac_active``: whether the FNAC terms were minimised in this epoch."""
        return {"fnac_active": self.active and epoch >= self.options.warmup_epochs}

    def check_epochs(self, epochs: int) -> None:
        if self.active and self.options.warmup_epochs >= epochs:
            raise ConfigError(f"fnac.warmup_epochs={self.options.warmup_epochs} with epochs={epochs}: the FNAC terms "
                              f"join after the warm-up and would never be used; raise epochs, lower "
                              f"fnac.warmup_epochs, or train method=nce")
