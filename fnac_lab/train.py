"""The training loop, which names no method: Adam over the weighted sum of the terms the configured method
(:mod:`fnac_lab.methods`) gives each batch, with that method's weights for the epoch, validation-based model
selection, and atomic checkpoints that resume exactly (:mod:`fnac_lab.checkpoint`).

Output directory layout::

    OUT/metrics.jsonl         one JSON object per epoch (validation scores, false-negative detection, mean loss terms)
    OUT/summary.json          best epoch, its validation scores, the test scores and reference-map levels
    OUT/config.json           the configuration of the run
    OUT/checkpoints/last.pt   state after the latest epoch (resumable; holds the best epoch's weights too)
    OUT/checkpoints/best.pt   the epoch with the best validation score
    OUT/tensorboard/          TensorBoard event files: metrics.jsonl's values, the learning rate and the step time by
                              epoch (:mod:`fnac_lab.tensorboard_events`; not with ``tensorboard=False``)
    OUT/missing_SPLIT.csv     listed ids of a real split that are missing on disk (only when some are)
    OUT/.fnac-lab.lock        held while the run writes there: a second run into OUT is refused (removed at the end)

A run started with ``resume=False`` (``--no-resume``) first removes every one of these files that an earlier run left
there: a folder never shows one run's summary beside another run's configuration.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .audio import spec_augment
from .checkpoint import (BEST, LAST, build_model, copy_weights, load_checkpoint, load_training_state,
                         save_training_state, training_state)
from .config import ConfigError, TrainConfig
from .data.contracts import ClassLabelled, InMemoryData, collate_fn
from .data.sampling import epoch_batch_sampler, false_negative_ratio
from .datasets import MISSING_REPORTS, NEGATIVES_SPLIT, build_datasets, negatives_of, write_dataset_reports
from .scoring import EvalResult, evaluate_model, evaluate_with_negatives
from .methods import Method, weighted_total
from .models import AVLocaliser
from .tensorboard_events import EpochEvents, remove_event_files
from .utils import (FnacError, atomic_write_text, epoch_seed, folder_lock, normalise_images, output_folder,
                    seed_everything, write_json)

#: Validation samples whose pairs score false-negative detection (``fn_auroc_*`` in metrics.jsonl).
FN_AUROC_SAMPLES = 1000
#: Fields that may differ when a run is resumed (they do not change what is computed per epoch).
RUNTIME_FIELDS = frozenset({"epochs", "device", "num_workers", "eval_batch_size", "channels_last", "compile",
                            "persistent_workers", "test_negatives", "tensorboard"})
#: What a run writes into its folder (besides ``missing_SPLIT.csv`` and the event files): removed first by a run that
#: does not resume.
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", f"checkpoints/{LAST}", f"checkpoints/{BEST}")
#: The validation scores of each epoch's record (``metrics.jsonl``) and of the summary.
VAL_SCORES = ("ap50", "mean_ciou", "auc")
#: Temperatures below this draw a warning when a run starts (published: 0.03; the logits scale as 1 / tau).
LOW_TAU = 1e-3


@dataclass
class TrainResult:
    out_dir: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    model: AVLocaliser
    test: EvalResult | None


def run_label(cfg: TrainConfig) -> str:
    """How progress names a run: the method's label and the seed (``FNAC seed 0``, ``NCE seed 0``)."""
    method = cfg.build_method()
    return f"{'NCE' if method.trains_nce_only(cfg.epochs) else method.label} seed {cfg.seed}"


def batch_sampler(cfg: TrainConfig, labels, epoch: int, *, rank: int = 0, world_size: int = 1):
    """The epoch's batch sampler of ``cfg``; under DDP each rank gets its slice of the same global batch."""
    return epoch_batch_sampler(labels, cfg.batch_size, class_bias_p=cfg.class_bias_p, seed=cfg.seed, epoch=epoch,
                               rank=rank, world_size=world_size)


def train_loader(dataset, sampler, cfg: TrainConfig, device: torch.device):
    """A DataLoader over ``sampler``'s batches, built once per run; None for in-memory data (``.batch``).

    Pinned host memory when training on CUDA (asynchronous copies); with ``cfg.persistent_workers`` the
    workers live across epochs (``sampler.set_epoch`` still applies: the batch sampler runs in this process).
    """
    if isinstance(dataset, InMemoryData):
        return None
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                       pin_memory=device.type == "cuda",
                                       persistent_workers=cfg.persistent_workers and cfg.num_workers > 0,
                                       collate_fn=collate_fn(dataset))


def amp_context(device: torch.device, enabled: bool):
    """bfloat16 autocast on ``device`` when ``enabled``, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def batch_outputs(model: AVLocaliser, batch: dict, cfg: TrainConfig, method: Method, device: torch.device, *,
                  train: bool = True, amp: bool | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The model's ``img`` and ``aud`` for one batch (inputs moved and normalised on ``device``), and the batch's
    class labels when the method reads or monitors them (None otherwise, or when the batch has none).

    The model runs under bfloat16 autocast when ``amp`` (default: ``cfg.amp`` on CUDA); the outputs are returned in
    float32. Under DDP with ``cfg.global_negatives`` the outputs and labels are first gathered over ranks, so that
    every term sees the global batch (see :mod:`fnac_lab.distributed` for why the gradients need no rescaling).
    """
    image = normalise_images(batch["image"].to(device, non_blocking=True))
    spec = batch["spec"].to(device, non_blocking=True).float()
    if train and cfg.audio_augment != "off":
        spec = spec_augment(spec, draw=cfg.audio_augment)
    if cfg.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
        spec = spec.contiguous(memory_format=torch.channels_last)
    with amp_context(device, cfg.amp and device.type == "cuda" if amp is None else amp):
        img, aud = model(image, spec)
    img, aud = img.float(), aud.float()
    if cfg.global_negatives:
        img, aud = distributed.all_gather_with_grad(img), distributed.all_gather_with_grad(aud)
    labels = None
    if (method.needs_labels or method.monitors) and "label" in batch:
        labels = batch["label"].to(device, non_blocking=True)
        if cfg.global_negatives:
            labels = distributed.all_gather_with_grad(labels)
    return img, aud, labels


def batch_terms(model: AVLocaliser, batch: dict, cfg: TrainConfig, method: Method, device: torch.device, *,
                train: bool = True, amp: bool | None = None) -> dict[str, torch.Tensor]:
    """The terms ``method`` gives one batch (:func:`batch_outputs`, then :meth:`~fnac_lab.methods.Method.terms`)."""
    img, aud, labels = batch_outputs(model, batch, cfg, method, device, train=train, amp=amp)
    return method.terms(img, aud, labels=labels if method.needs_labels else None)


def train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = True, progress: bool = True,
          datasets: dict[str, Any] | None = None, log_epochs: bool = False) -> TrainResult:
    """Train ``cfg`` into ``out_dir``; with ``resume`` an existing ``last.pt`` there is continued.

    ``progress`` shows one bar over the whole run (named by :func:`run_label`, with the time left);
    ``log_epochs`` also prints one line per epoch (for logs, where a bar does not show).

    Under ``torchrun`` (``WORLD_SIZE > 1``) this joins the process group for the run and trains with DDP:
    every rank draws its slice of each global batch; rank 0 alone shows progress, validates, writes
    metrics, checkpoints and the summary; the other ranks return the same summary and history.

    Refused before any work (:func:`check_run`): a method that cannot do what its options say in ``epochs`` (FNAC
    weights with no epoch after the warm-up), and an ``out_dir``
    that another run is writing into (:func:`fnac_lab.utils.folder_lock`).
    """
    check_run(cfg)
    out = output_folder(out_dir)
    main = distributed.get_rank() == 0  # rank 0 alone writes into out_dir, and locks it
    with folder_lock(out) if main else nullcontext():
        if main:
            warn_low_temperature(cfg)
            if not resume:
                remove_run_files(out)
        with distributed.process_group(cfg.device) as device:
            return _train(cfg, out, device, resume=resume, progress=progress, datasets=datasets,
                          log_epochs=log_epochs)


def check_run(cfg: TrainConfig) -> None:
    """Refuse a run in which the method cannot do what its options say within ``epochs`` (for FNAC: weights above 0 but
    no epoch after the warm-up). The configuration itself is valid: a short run may be resumed and extended later."""
    cfg.build_method().check_epochs(cfg.epochs)


def remove_run_files(out: Path) -> None:
    """Remove what an earlier run wrote into ``out`` (:data:`RUN_FILES`, ``missing_SPLIT.csv``, the event files), saying
    so in one line on stderr when there was something: the run that follows owns every result file of the folder."""
    earlier = [out / name for name in RUN_FILES if (out / name).is_file()] + sorted(out.glob(MISSING_REPORTS))
    for path in earlier:
        path.unlink()
    earlier += remove_event_files(out)
    if earlier:
        print(f"fnac-lab: not resuming: removed the earlier run's {len(earlier)} files from {out} "
              f"({', '.join(p.name for p in earlier)})", file=sys.stderr, flush=True)


def warn_low_temperature(cfg: TrainConfig) -> None:
    """One line on stderr when ``tau`` (or a method's ``target_tau``) lies far below the published 0.03."""
    for name, value in cfg.settings().items():
        if name.rpartition(".")[2] in ("tau", "target_tau") and value is not None and value < LOW_TAU:
            print(f"fnac-lab: warning: {name}={value:g} is far below the published 0.03; the similarities are "
                  f"divided by it, so the logits and losses grow as 1/{name}", file=sys.stderr, flush=True)


def _global_fn_ratio(sampler, labels) -> float:
    """Mean FN ratio over the epoch's global batches (what the loss sees with global negatives)."""
    labels = np.asarray(labels)
    return float(np.mean([false_negative_ratio(labels[b]) for b in sampler.global_batches()]))


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def curve_section(method: Method):
    """The TensorBoard section of each field of an epoch's record (:mod:`fnac_lab.tensorboard_events`): validation
    (the scores), loss (``method``'s terms and their weighted total), false_negatives (the FN ratio, the detection
    AUROCs, a method's detection counts), else epoch."""
    losses = {*method.term_labels, "loss"}
    return lambda name: ("validation" if name in VAL_SCORES else "loss" if name in losses
                         else "false_negatives" if name.startswith("fn_") else "epoch")


@dataclass
class RunState:
    """What a run carries from epoch to epoch (and what ``last.pt`` keeps): the history, the best epoch so far and
    its weights, and the first epoch still to train."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": -1, "score": -math.inf})
    best_model: dict[str, torch.Tensor] = field(default_factory=dict)
    start: int = 0


def saved_state(cfg: TrainConfig, ckpt_dir: Path, *, resume: bool, main: bool) -> dict[str, Any] | None:
    """The ``last.pt`` state to continue from, checked against ``cfg`` before any data or model is built (rank 0
    reads it and sends it to the others, whose nodes need not share its file system); None to start afresh.

    Refused in one line: a setting this version does not know, another configuration, and fewer ``epochs`` than
    the folder already holds."""
    last = ckpt_dir / LAST

    def check(state: dict[str, Any]) -> None:
        cfg.check_resumable(state["config"], source=last, runtime=RUNTIME_FIELDS)
        trained = state["epoch"] + 1
        if cfg.epochs < trained:
            raise FnacError(f"{last}: {trained} epochs are trained there already and epochs={cfg.epochs} asks for "
                            f"fewer; set epochs to {trained} or more, use another --out, or --no-resume")

    state: dict[str, Any] | FnacError | None = None
    if resume and main:
        try:
            state = load_training_state(ckpt_dir, check)
        except FnacError as exc:  # every rank stops with it, none waits for a state that will not come
            state = exc
    state = distributed.broadcast_object(state)
    if isinstance(state, FnacError):
        raise state
    return state


def _resume(state: dict[str, Any] | None, model: AVLocaliser, optimizer) -> RunState:
    """The run's state after :func:`saved_state`'s ``state`` is loaded into ``model`` and ``optimizer`` (a fresh
    one without it)."""
    if state is None:
        return RunState()
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return RunState(history=state["history"], best=state["best"], best_model=state["best_model"],
                    start=state["epoch"] + 1)


def _train_epoch(cfg: TrainConfig, method: Method, forward_model, optimizer, batches, device: torch.device,
                 epoch: int, bar) -> tuple[dict[str, float], list[float]]:
    """One pass over ``batches``, minimising the method's weighted terms (:func:`~fnac_lab.methods.weighted_total`):
    the epoch's mean terms and total (averaged over ranks) and each batch's false-negative ratio. A non-finite mean
    stops the run."""
    weights = method.weights(epoch)
    sums = torch.zeros(len(method.term_labels) + 1, device=device)  # accumulated on the device: no sync per step
    counts: dict[str, torch.Tensor] = {}  # the method's monitors, summed over the epoch's batches
    fn_ratios, n_batches = [], 0
    for batch in batches:
        img, aud, labels = batch_outputs(forward_model, batch, cfg, method, device)
        terms = method.terms(img, aud, labels=labels if method.needs_labels else None)
        loss = weighted_total(terms, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += torch.stack([terms[k].detach() for k in method.term_labels] + [loss.detach()])
        if labels is not None and method.monitors:
            with torch.no_grad():
                for key, value in method.monitor(img.detach(), aud.detach(), labels).items():
                    counts[key] = counts[key] + value if key in counts else value
        if "label" in batch:
            fn_ratios.append(false_negative_ratio(batch["label"]))
        n_batches += 1
        bar.update()
    sums = distributed.all_reduce_mean(sums)  # equal on every rank with global negatives
    means = dict(zip((*method.term_labels, "loss"), (sums / max(n_batches, 1)).tolist()))
    if not all(math.isfinite(v) for v in means.values()):
        raise FnacError(f"non-finite loss in epoch {epoch + 1} ({means}); lower lr or the method's term weights")
    if counts:
        totals = distributed.all_reduce_mean(torch.stack(list(counts.values()))).tolist()
        means.update(method.monitor_record(dict(zip(counts, totals))))
    return means, fn_ratios


def _validate_and_select(cfg: TrainConfig, method: Method, model: AVLocaliser, val_set, device: torch.device,
                         epoch: int, record: dict[str, Any], run: RunState) -> tuple[float, bool]:
    """Score the validation split, add the epoch's record to the history and keep the best epoch's weights
    (ties go to the later epoch, as published). Returns the score and whether it is the best so far."""
    val = evaluate_model(model, val_set, batch_size=cfg.eval_batch_size, device=device, reference_maps=False,
                         progress=False, embeddings=True, tne_threshold=method.foreground_threshold)
    run.history.append({"epoch": epoch + 1, "split": "val", **{k: val.scores[k] for k in VAL_SCORES},
                        **record["means"], **val.fn_auroc(FN_AUROC_SAMPLES),
                        **method.epoch_record(epoch),
                        "fn_ratio": record["fn_ratio"], "train_seconds": record["train_seconds"]})
    score = val.scores[cfg.select_metric]
    improved = score >= run.best["score"]
    if improved:
        run.best, run.best_model = {"epoch": epoch + 1, "score": score}, copy_weights(model)
    return score, improved


def _train(cfg: TrainConfig, out: Path, device: torch.device, *, resume: bool, progress: bool,
           datasets: dict[str, Any] | None, log_epochs: bool) -> TrainResult:
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    main = rank == 0
    progress, log_epochs = progress and main, log_epochs and main
    if cfg.batch_size % world_size:
        raise ConfigError(f"batch_size={cfg.batch_size}: the global batch must be divisible by the number of "
                          f"processes ({world_size})")
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = saved_state(cfg, ckpt_dir, resume=resume, main=main)
    seed_everything(cfg.seed)
    datasets = datasets if datasets is not None else build_datasets(cfg)
    if main:
        write_dataset_reports(datasets, out)
    model = build_model(cfg, progress=progress).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = _resume(state, model, optimizer)
    if main:
        write_json(out / "config.json", cfg.to_dict())
        _write_history(out, run.history)
    train_set, val_set = datasets["train"], datasets["val"]
    labels = train_set.labels if isinstance(train_set, ClassLabelled) else None
    sampler = batch_sampler(cfg, labels if labels is not None else torch.zeros(len(train_set)), run.start,
                            rank=rank, world_size=world_size)
    loader = train_loader(train_set, sampler, cfg, device)
    forward_model = distributed.wrap_model(model, device, sync_batchnorm=cfg.sync_batchnorm)
    if cfg.compile:
        forward_model = torch.compile(forward_model)

    method = cfg.build_method()
    events = EpochEvents(out, run.history, curve_section(method), lr=optimizer.param_groups[0]["lr"],
                         steps=len(sampler), enabled=main and cfg.tensorboard)
    label = run_label(cfg)
    bar = tqdm(total=(cfg.epochs - run.start) * len(sampler), disable=not progress, desc=label, unit="batch",
               leave=False)
    t_run = time.perf_counter()
    for epoch in range(run.start, cfg.epochs):
        torch.manual_seed(epoch_seed(cfg.seed, epoch) + rank)  # rank 0 draws what a single process draws
        sampler.set_epoch(epoch)
        model.train()
        bar.set_description(f"{label}, epoch {epoch + 1}/{cfg.epochs}")
        t0 = time.perf_counter()
        batches = loader if loader is not None else map(train_set.batch, sampler)
        means, fn_ratios = _train_epoch(cfg, method, forward_model, optimizer, batches, device, epoch, bar)
        if world_size > 1 and cfg.global_negatives and labels is not None:
            fn_ratios = [_global_fn_ratio(sampler, labels)]
        if not main:
            continue  # rank 0 validates and writes; the others wait for it in the next collective
        record = {"means": means, "fn_ratio": float(np.mean(fn_ratios)) if fn_ratios else None,
                  "train_seconds": round(time.perf_counter() - t0, 2)}
        score, improved = _validate_and_select(cfg, method, model, val_set, device, epoch, record, run)
        save_training_state(training_state(model, optimizer, cfg, epoch, run.history, run.best, run.best_model),
                            ckpt_dir, improved=improved)
        _write_history(out, run.history)
        events.add(run.history[-1])
        bar.set_postfix_str(f"validation {cfg.select_metric} {score:.3f}")
        if log_epochs:
            left = (time.perf_counter() - t_run) / (epoch + 1 - run.start) * (cfg.epochs - epoch - 1)
            print(f"{label}: epoch {epoch + 1}/{cfg.epochs}, validation {cfg.select_metric} {score:.3f}, "
                  f"about {left / 60:.1f} min left", flush=True)
    bar.close()
    events.close()

    if not main:
        summary, history = distributed.broadcast_object(None)
        return TrainResult(out_dir=out, history=history, summary=summary, model=model, test=None)
    result = finish(cfg, out, datasets, device, progress=progress)
    distributed.broadcast_object((result.summary, result.history))
    return result


def finish(cfg: TrainConfig, out: Path, datasets: dict[str, Any], device: torch.device, *,
           progress: bool = True) -> TrainResult:
    """Evaluate ``best.pt`` on the test split(s) and write ``summary.json``; the test split with its negatives, when
    the configuration has them (the extended protocol's scores join its cIoU, AP50 and AUC, which stay unchanged)."""
    model, _, state = load_checkpoint(out / "checkpoints" / BEST, map_location=device)
    model.to(device)
    history = load_training_state(out / "checkpoints")["history"]
    best_epoch = state["best"]["epoch"]
    summary: dict[str, Any] = {"best_epoch": best_epoch, "select_metric": cfg.select_metric,
                               "val": {k: history[best_epoch - 1][k] for k in VAL_SCORES}}
    test = None
    for name in [k for k in datasets if k.startswith("test") and k != NEGATIVES_SPLIT]:
        negatives = negatives_of(datasets, name)
        if negatives is not None:
            result = evaluate_with_negatives(model, datasets[name], negatives, batch_size=cfg.eval_batch_size,
                                             device=device, progress=progress, desc=name)
        else:
            result = evaluate_model(model, datasets[name], batch_size=cfg.eval_batch_size, device=device,
                                    progress=progress, desc=name)
        summary[name] = {**result.scores, "reference_maps": result.reference_maps}
        if name == "test":
            test = result
    summary["epochs_trained"] = len(history)
    write_json(out / "summary.json", summary)
    return TrainResult(out_dir=out, history=history, summary=summary, model=model, test=test)
