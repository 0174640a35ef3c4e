"""Training loop: Adam, NCE-only warm-up, weighted FNAC terms, validation-based model selection,
atomic checkpoints that resume exactly.

Output directory layout::

    OUT/metrics.jsonl         one JSON object per epoch (validation scores and mean loss terms)
    OUT/summary.json          best epoch, its validation scores, the test scores and trivial-map levels
    OUT/config.json           the configuration of the run
    OUT/checkpoints/last.pt   state after the latest epoch (resumable)
    OUT/checkpoints/best.pt   the epoch with the best validation score
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .audio import spec_augment
from .config import BUILTIN, ConfigError, TrainConfig
from .data.builtin import BuiltinSpec, builtin_splits
from .data.sampling import ClassBiasedBatchSampler, ShuffledBatchSampler, false_negative_ratio
from .evaluate import EvalResult, evaluate_model
from .losses import fnac_terms, similarity_maps
from .models import AVLocalizer, create_model
from .utils import (FnacError, atomic_torch_save, atomic_write_text, epoch_seed, normalise_images, resolve_device,
                    seed_everything, write_json)

TERMS = ("nce", "fns_audio", "fns_visual", "tne")
#: Fields that may differ when a run is resumed (they do not change what is computed per epoch).
RUNTIME_FIELDS = frozenset({"epochs", "device", "num_workers", "eval_batch_size"})


@dataclass
class TrainResult:
    out_dir: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    model: AVLocalizer
    test: EvalResult | None


def build_model(cfg: TrainConfig) -> AVLocalizer:
    """The localiser described by ``cfg`` (published initialisation, optional pretrained visual weights)."""
    return create_model(
        visual_backbone=cfg.visual_backbone, visual_stage=cfg.visual_stage,
        audio_backbone=cfg.audio_backbone, audio_stage=cfg.audio_stage, embed_dim=cfg.embed_dim,
        visual_dropout=cfg.visual_dropout, audio_dropout=cfg.audio_dropout, centre_norm=cfg.centre_norm,
        visual_pretrained=cfg.visual_pretrained and cfg.visual_weights is None,
        visual_weights=cfg.visual_weights, tau=cfg.tau,
    )


def build_datasets(cfg: TrainConfig) -> dict[str, Any]:
    """Train / val / test datasets named by ``cfg.dataset`` (the built-in data is generated here)."""
    if cfg.dataset == BUILTIN:
        spec = BuiltinSpec(n_classes=cfg.n_classes, image_size=cfg.image_size, n_scenes=cfg.n_scenes)
        return builtin_splits(n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test, seed=cfg.data_seed,
                              spec=spec, n_unheard=cfg.n_unheard)
    raise ConfigError(f"dataset={cfg.dataset!r} is not available")


def batch_sampler(cfg: TrainConfig, labels: torch.Tensor, epoch: int):
    if cfg.class_bias_p > 0:
        sampler = ClassBiasedBatchSampler(labels, cfg.batch_size, cfg.class_bias_p, seed=cfg.seed)
    else:
        sampler = ShuffledBatchSampler(len(labels), cfg.batch_size, seed=cfg.seed)
    sampler.set_epoch(epoch)
    return sampler


def _train_batches(dataset, sampler, cfg: TrainConfig):
    if hasattr(dataset, "batch"):
        for idx in sampler:
            yield dataset.batch(idx)
        return
    yield from torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                           pin_memory=torch.cuda.is_available(),
                                           collate_fn=getattr(dataset, "collate", None))


def compute_losses(model: AVLocalizer, batch: dict, cfg: TrainConfig, device: torch.device, *,
                   train: bool = True) -> dict[str, torch.Tensor]:
    """The four loss terms of one batch (inputs moved and normalised on ``device``)."""
    image = normalise_images(batch["image"].to(device, non_blocking=True))
    spec = batch["spec"].to(device, non_blocking=True).float()
    if train and cfg.audio_augment:
        spec = spec_augment(spec)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.amp else nullcontext())
    with autocast:
        img, aud = model(image, spec)
    img, aud = img.float(), aud.float()
    sim = similarity_maps(img, aud, cfg.tau)
    return fnac_terms(img, aud, sim, tau=cfg.tau, tne_threshold=cfg.tne_threshold, distance=cfg.distance,
                      detach_targets=cfg.detach_targets)


def total_loss(terms: dict[str, torch.Tensor], cfg: TrainConfig, epoch: int) -> torch.Tensor:
    """NCE during the warm-up epochs, then NCE plus the weighted FNAC terms."""
    loss = terms["nce"]
    if epoch >= cfg.warmup_epochs:
        loss = loss + cfg.w_fns_audio * terms["fns_audio"] + cfg.w_fns_visual * terms["fns_visual"] \
            + cfg.w_tne * terms["tne"]
    return loss


def _checkpoint(model, optimizer, cfg, epoch, history, best) -> dict[str, Any]:
    return {"config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "history": history, "best": best}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[AVLocalizer, TrainConfig, dict]:
    """Model (weights loaded, eval mode), configuration and raw dict of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise FnacError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        cfg = TrainConfig(**{**ckpt["config"], "visual_pretrained": False, "visual_weights": None})
    except Exception as exc:
        raise FnacError(f"{path}: not a fnac-lab checkpoint ({exc})") from exc
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, TrainConfig(**ckpt["config"]), ckpt


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = True, progress: bool = True,
          datasets: dict[str, Any] | None = None) -> TrainResult:
    """Train ``cfg`` into ``out_dir``; with ``resume`` an existing ``last.pt`` there is continued."""
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    datasets = datasets if datasets is not None else build_datasets(cfg)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": -1, "score": -math.inf}
    start = 0
    last_path = ckpt_dir / "last.pt"
    if resume and last_path.exists():
        state = torch.load(last_path, map_location=device, weights_only=False)
        changed = {k for k, v in cfg.to_dict().items() if state["config"].get(k) != v and k not in RUNTIME_FIELDS}
        if changed:
            raise FnacError(f"{last_path}: written with a different configuration ({', '.join(sorted(changed))}); "
                            f"use another --out or resume=False")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, start = state["history"], state["best"], state["epoch"] + 1
    write_json(out / "config.json", cfg.to_dict())
    train_set, val_set = datasets["train"], datasets["val"]
    labels = train_set.labels if hasattr(train_set, "labels") else None

    for epoch in range(start, cfg.epochs):
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        sampler = batch_sampler(cfg, labels if labels is not None else torch.zeros(len(train_set)), epoch)
        model.train()
        sums = torch.zeros(len(TERMS) + 1, device=device)  # accumulated on the device: no sync per step
        fn_ratios, n_batches, t0 = [], 0, time.perf_counter()
        bar = tqdm(_train_batches(train_set, sampler, cfg), total=len(sampler), disable=not progress,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for batch in bar:
            terms = compute_losses(model, batch, cfg, device)
            loss = total_loss(terms, cfg, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += torch.stack([terms[k].detach() for k in TERMS] + [loss.detach()])
            if "label" in batch:
                fn_ratios.append(false_negative_ratio(batch["label"]))
            n_batches += 1
        means = dict(zip((*TERMS, "loss"), (sums / max(n_batches, 1)).tolist()))
        if not all(math.isfinite(v) for v in means.values()):
            raise FnacError(f"non-finite loss in epoch {epoch + 1} ({means}); lower lr or the FNAC weights")
        train_seconds = time.perf_counter() - t0
        val = evaluate_model(model, val_set, batch_size=cfg.eval_batch_size, device=device, baselines=False,
                             progress=progress, desc="validate")
        record = {"epoch": epoch + 1, "split": "val",
                  **{k: val.scores[k] for k in ("ap50", "mean_ciou", "auc")},
                  **means,
                  "fnac_active": cfg.fnac_active and epoch >= cfg.warmup_epochs,
                  "fn_ratio": float(np.mean(fn_ratios)) if fn_ratios else None,
                  "train_seconds": round(train_seconds, 2)}
        history.append(record)
        score = val.scores[cfg.select_metric]
        improved = score > best["score"]
        if improved:
            best = {"epoch": epoch + 1, "score": score}
        state = _checkpoint(model, optimizer, cfg, epoch, history, best)
        atomic_torch_save(state, last_path)
        if improved:
            atomic_torch_save(state, ckpt_dir / "best.pt")
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))

    return finish(cfg, out, datasets, device, progress=progress)


def finish(cfg: TrainConfig, out: Path, datasets: dict[str, Any], device: torch.device, *,
           progress: bool = True) -> TrainResult:
    """Evaluate ``best.pt`` on the test split(s) and write ``summary.json``."""
    model, _, state = load_checkpoint(out / "checkpoints" / "best.pt", map_location=device)
    model.to(device)
    history = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["history"]
    best_epoch = state["best"]["epoch"]
    summary: dict[str, Any] = {"best_epoch": best_epoch, "select_metric": cfg.select_metric,
                               "val": {k: history[best_epoch - 1][k] for k in ("ap50", "mean_ciou", "auc")}}
    test = None
    for name in [k for k in datasets if k.startswith("test")]:
        result = evaluate_model(model, datasets[name], batch_size=cfg.eval_batch_size, device=device,
                                progress=progress, desc=name)
        summary[name] = {**result.scores, "baselines": result.baselines}
        if name == "test":
            test = result
    summary["epochs_trained"] = len(history)
    write_json(out / "summary.json", summary)
    return TrainResult(out_dir=out, history=history, summary=summary, model=model, test=test)
