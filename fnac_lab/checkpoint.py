"""Checkpoints: the model a configuration describes, the training state that resumes a run, and loading either back.

A run keeps two files in ``OUT/checkpoints``:

    last.pt   the state after the latest epoch: model, optimiser, history, the best epoch so far and *that epoch's
              weights*; the one file a resumed run reads
    best.pt   the best epoch as a checkpoint of its own (configuration, weights, history up to it), for evaluation

Both are written atomically (a temporary file, then a rename), ``last.pt`` first. ``best.pt`` is derived from
``last.pt``: a run killed between the two writes, or stopped by a full disk, leaves a ``best.pt`` that is older
than the ``last.pt`` naming it, and :func:`load_training_state` rewrites it from ``last.pt`` on resume. A kill at
any point therefore resumes to exactly the files an uninterrupted run writes.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable

import torch

from .config import TrainConfig, pretrain_config_for
from .models import AVLocaliser, create_model
from .pretrain import builtin_visual_weights
from .utils import FnacError, UnsafeFileError, atomic_torch_save, describe, load_torch_file

LAST, BEST = "last.pt", "best.pt"


def build_model(cfg: TrainConfig, *, progress: bool = True) -> AVLocaliser:
    """The localiser described by ``cfg`` (published initialisation, optional pretrained visual weights).

    The visual weights come from ``cfg.visual_weights`` (a file), else from the built-in pretraining that
    ``cfg.visual_pretrain`` names (pretrained once and cached), else from timm's hub when ``cfg.visual_pretrained``.
    """
    weights = cfg.visual_weights
    if cfg.visual_pretrain is not None:
        weights = builtin_visual_weights(pretrain_config_for(cfg), progress=progress)
    return create_model(
        visual_backbone=cfg.visual_backbone, visual_stage=cfg.visual_stage,
        audio_backbone=cfg.audio_backbone, audio_stage=cfg.audio_stage, embed_dim=cfg.embed_dim,
        visual_dropout=cfg.visual_dropout, audio_dropout=cfg.audio_dropout, centre_norm=cfg.centre_norm,
        visual_pretrained=cfg.visual_pretrained and weights is None, visual_weights=weights, tau=cfg.tau,
    )


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw dict of a checkpoint file, read as data only (:func:`fnac_lab.utils.load_torch_file`: nothing in the
    file can run code); a missing, truncated, foreign or unsafe file raises :class:`FnacError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FnacError(f"{path}: checkpoint not found")
    try:
        state = load_torch_file(path, map_location)
    except UnsafeFileError:
        raise
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise FnacError(f"{path}: not a readable checkpoint ({describe(exc)})") from None
    if not isinstance(state, dict) or not {"config", "model"} <= set(state):
        raise FnacError(f"{path}: not a fnac-lab checkpoint (no configuration and weights)")
    return state


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[AVLocaliser, TrainConfig, dict[str, Any]]:
    """Model (weights loaded, eval mode), configuration and raw dict of a checkpoint file."""
    state = read_checkpoint(path, map_location)
    try:
        cfg = TrainConfig.from_dict(state["config"])
    except Exception as exc:
        raise FnacError(f"{path}: its configuration is not valid here ({describe(exc)})") from None
    # the weights come from the file: nothing to fetch or pretrain
    model = build_model(cfg.replace(visual_pretrained=False, visual_weights=None, visual_pretrain=None))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise FnacError(f"{path}: its weights do not fit its configuration ({describe(exc)})") from None
    model.eval()
    return model, cfg, state


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, epoch: int,
                   history: list[dict[str, Any]], best: dict[str, Any], best_model: dict[str, torch.Tensor]
                   ) -> dict[str, Any]:
    """The contents of ``last.pt`` after ``epoch`` (0-based): enough to resume exactly and to rebuild ``best.pt``."""
    return {"config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "history": history, "best": best, "best_model": best_model}


def best_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """``best.pt`` from a ``last.pt`` state: the best epoch's weights with the history up to that epoch."""
    epoch = state["best"]["epoch"]
    return {"config": state["config"], "epoch": epoch - 1, "model": state["best_model"],
            "history": state["history"][:epoch], "best": state["best"]}


def copy_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s state dict (kept as the best weights while training goes on)."""
    return copy.deepcopy({k: v.detach() for k, v in model.state_dict().items()})


def save_training_state(state: dict[str, Any], folder: Path, *, improved: bool) -> None:
    """Write ``last.pt``, then (when the epoch improved) ``best.pt``; each atomically."""
    atomic_torch_save(state, folder / LAST)
    if improved:
        atomic_torch_save(best_checkpoint(state), folder / BEST)


def load_training_state(folder: Path, check: Callable[[dict[str, Any]], None] | None = None
                        ) -> dict[str, Any] | None:
    """The ``last.pt`` state of ``folder`` (None when there is none), after making ``best.pt`` agree with it.
    ``check`` sees the state first and may refuse it: a refused state leaves every file as it was."""
    last = folder / LAST
    if not last.exists():
        return None
    state = read_checkpoint(last)
    if not {"epoch", "optimizer", "history", "best", "best_model"} <= set(state):
        raise FnacError(f"{last}: written by an older version that cannot resume safely; rerun with --no-resume")
    if check is not None:
        check(state)
    best = folder / BEST
    try:
        ok = read_checkpoint(best).get("epoch") == state["best"]["epoch"] - 1
    except FnacError:
        ok = False
    if not ok:  # interrupted between the two writes: best.pt lags behind the last.pt that names it
        atomic_torch_save(best_checkpoint(state), best)
    return state
