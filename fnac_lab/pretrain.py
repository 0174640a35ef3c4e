"""Supervised pretraining of the visual stream on single built-in objects: the built-in analogue of the ImageNet
weights the paper's visual stream starts from (Sun et al., CVPR 2023, section 4.1).

The visual backbone, cut where the audio-visual model cuts it, learns to classify single objects rendered by the
built-in generator (:func:`fnac_lab.data.builtin.object_images`: every shape-colour pair, random streams disjoint
from the audio-visual splits) through global average pooling and a linear classifier. Output directory::

    OUT/visual_backbone.pt    the backbone's state dict, timm's keys (loads into
                              timm.create_model(name, features_only=True, out_indices=(stage,)))
    OUT/metrics.jsonl         per epoch: train loss and accuracy, validation accuracy
    OUT/summary.json          final accuracies, seconds, the configuration
    OUT/config.json           the configuration
    OUT/last.pt               resumable state after the latest epoch
    OUT/tensorboard/          TensorBoard event files: metrics.jsonl's values, the learning rate and the step time by
                              epoch (:mod:`fnac_lab.tensorboard_events`; not with ``tensorboard=False``)
    OUT/.fnac-lab.lock        held while a pretraining writes there (removed at the end)

A pretraining started with ``resume=False`` (``--no-resume``) first removes these files of an earlier one.

An audio-visual run uses the file through ``visual_weights=OUT/visual_backbone.pt``, or names a pretraining
preset with ``visual_pretrain=demo``: the backbone is then pretrained once into a cache directory
(``$FNAC_LAB_CACHE``, default ``~/.cache/fnac-lab``) and reused by every later run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from filelock import FileLock
from tqdm.auto import tqdm

from .config import PretrainConfig
from .data.builtin import BuiltinSpec, object_images
from .models import feature_backbone, init_published
from .tensorboard_events import EpochEvents, remove_event_files
from .utils import (FnacError, UnsafeFileError, atomic_torch_save, atomic_write_text, cache_root, describe, epoch_seed,
                    folder_lock, load_torch_file, normalise_images, output_folder, preserved_random_state, resolve_device,
                    seed_everything, write_json)

WEIGHTS_FILE = "visual_backbone.pt"
#: What a pretraining writes into its folder: removed first by one that does not resume.
PRETRAIN_FILES = (WEIGHTS_FILE, "metrics.jsonl", "summary.json", "config.json", "last.pt")
#: Settings that change nothing a pretraining computes: they may change on resuming, and do not name its cache.
RUNTIME_FIELDS = frozenset({"device", "tensorboard"})


class ObjectClassifier(nn.Module):
    """A feature backbone, global average pooling and a linear classifier."""

    def __init__(self, backbone: nn.Module, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_info.channels()[-1], n_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image)[-1].mean(dim=(2, 3)))


def build_classifier(cfg: PretrainConfig) -> ObjectClassifier:
    """The backbone cut at ``cfg.visual_stage`` with the published initialisation, and its classifier."""
    model = ObjectClassifier(feature_backbone(cfg.visual_backbone, cfg.visual_stage), cfg.n_classes)
    init_published(model)
    return model


@dataclass
class PretrainResult:
    out_dir: Path
    weights: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any]


@torch.no_grad()
def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = normalise_images(images[start : start + batch_size].to(device))
        correct += int((model(x).argmax(dim=1).cpu() == labels[start : start + batch_size]).sum())
    return correct / len(images)


def curve_section(name: str) -> str:
    """The TensorBoard section of a field of a pretraining epoch's record: loss, accuracy, else epoch."""
    return "loss" if name.endswith("loss") else "accuracy" if name.endswith("accuracy") else "epoch"


def pretrain(cfg: PretrainConfig, out_dir: str | os.PathLike, *, resume: bool = True,
             progress: bool = True) -> PretrainResult:
    """Pretrain ``cfg`` into ``out_dir`` (continuing its ``last.pt`` with ``resume``); see the module docstring.
    Another run writing into ``out_dir`` is refused (:func:`fnac_lab.utils.folder_lock`)."""
    out = output_folder(out_dir)
    with folder_lock(out):
        if not resume:
            for name in PRETRAIN_FILES:
                (out / name).unlink(missing_ok=True)
            remove_event_files(out)
        return _pretrain(cfg, out, resume=resume, progress=progress)


def _pretrain(cfg: PretrainConfig, out: Path, *, resume: bool, progress: bool) -> PretrainResult:
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    spec = BuiltinSpec(n_classes=cfg.n_classes, image_size=cfg.image_size)
    train_x, train_y = object_images("train", cfg.n_train, seed=cfg.seed, spec=spec)
    val_x, val_y = object_images("val", cfg.n_val, seed=cfg.seed, spec=spec)
    model = build_classifier(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, Any]] = []
    start = 0
    last = out / "last.pt"
    if resume and last.exists():
        try:
            state = load_torch_file(last)
            saved = state["config"]
        except UnsafeFileError:
            raise
        except Exception as exc:
            raise FnacError(f"{last}: cannot be read to resume ({describe(exc)}); "
                            f"delete it or rerun with --no-resume") from None
        cfg.check_resumable(saved, source=last, runtime=RUNTIME_FIELDS)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start = state["history"], state["epoch"] + 1
    write_json(out / "config.json", cfg.to_dict())
    n_batches = cfg.n_train // cfg.batch_size
    events = EpochEvents(out, history, curve_section, lr=optimizer.param_groups[0]["lr"], steps=n_batches,
                         enabled=cfg.tensorboard)
    bar = tqdm(total=(cfg.epochs - start) * n_batches, desc=f"pretrain {cfg.visual_backbone} stage {cfg.visual_stage}",
               disable=not progress, unit="batch")
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        order = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(cfg.n_train))
        model.train()
        loss_sum, correct, t0 = torch.zeros((), device=device), torch.zeros((), device=device), time.perf_counter()
        for b in range(n_batches):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = normalise_images(train_x[idx].to(device))
            flip = torch.rand(len(idx)) < 0.5  # random horizontal flip
            x = torch.where(flip.to(device).view(-1, 1, 1, 1), x.flip(-1), x)
            y = train_y[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(dim=1) == y).sum()
            bar.update()
        record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / n_batches,
                  "train_accuracy": float(correct) / (n_batches * cfg.batch_size),
                  "val_accuracy": _accuracy(model, val_x, val_y, 256, device),
                  "train_seconds": round(time.perf_counter() - t0, 2)}
        history.append(record)
        bar.set_postfix(val_accuracy=f"{record['val_accuracy']:.3f}")
        atomic_torch_save({"config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
                           "optimizer": optimizer.state_dict(), "history": history}, last)
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        events.add(record)
    bar.close()
    events.close()
    weights = out / WEIGHTS_FILE
    atomic_torch_save({k: v.cpu() for k, v in model.backbone.state_dict().items()}, weights)
    summary = {"train_accuracy": history[-1]["train_accuracy"], "val_accuracy": history[-1]["val_accuracy"],
               "epochs": len(history), "seconds": round(sum(r["train_seconds"] for r in history), 1),
               "chance": 1 / cfg.n_classes, "weights": str(weights), "config": cfg.to_dict()}
    write_json(out / "summary.json", summary)
    return PretrainResult(out_dir=out, weights=weights, history=history, summary=summary)


def cached_pretrain_dir(cfg: PretrainConfig) -> Path:
    """The cache folder of ``cfg``: named by a hash of every setting but the device and the event files' switch."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "pretrain" / f"{cfg.visual_backbone}-stage{cfg.visual_stage}-{cfg.image_size}px-{digest}"


def builtin_visual_weights(cfg: PretrainConfig, *, progress: bool = True) -> Path:
    """The weights file of ``cfg``'s pretraining, pretrained first if the cache lacks it (one process at a time:
    runs started together wait for the first one's file instead of pretraining twice).

    The pretraining seeds the global random streams; they are restored afterwards, so a run draws the same
    initialisation whether its pretraining was cached or not."""
    folder = cached_pretrain_dir(cfg)
    weights = folder / WEIGHTS_FILE
    if weights.is_file():
        return weights
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FnacError(f"{folder}: cannot create the cache of pretrained backbones ({exc.strerror or exc}); set "
                        f"FNAC_LAB_CACHE to a writable folder") from None
    with FileLock(str(folder) + ".lock"):
        if not weights.is_file():
            if progress:
                print(f"pretraining the visual stream once into {folder} (reused by later runs)")
            with preserved_random_state():
                pretrain(cfg, folder, progress=progress)
    return weights
