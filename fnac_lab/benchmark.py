"""Scoring a checkpoint on a real benchmark's test set (Flickr-SoundNet, VGG-SS, AVSBench-S4), batched on the device,
with the published conventions of :mod:`fnac_lab.metrics`, beside the trivial maps of :mod:`fnac_lab.evaluate`
and, optionally, object-guided localisation (:mod:`fnac_lab.ogl`). The extended sets (``flickr_extended``,
``vggss_extended``; SLAVC, Mo and Morgado, NeurIPS 2022) add their negatives and the extended protocol's scores of
the audio-visual map (:func:`fnac_lab.evaluate.extended_scores`). Writes the result files of
``fnac-lab evaluate --testset``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics
from .checkpoint import load_checkpoint
from .data.catalogue import EXTENDED_TESTSETS
from .data.real import RealAVDataset, open_negatives, open_testset
from .evaluate import EXTENDED_TRIVIAL, centre_prior, extended_scores, negatives_generator, oracle_maps
from .metrics import MAP_SIZE
from .ogl import fuse_maps, load_object_network
from .utils import FnacError, folder_lock, normalise_images, output_folder, resolve_device, write_json, write_rows


def width_batches(widths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of indices whose spectrograms share a width (native rates may differ between clips)."""
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(widths):
        groups.setdefault(w, []).append(i)
    return [g[k : k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]


@dataclass
class BenchmarkResult:
    """Per-sample and summary scores of one test set (restored to the order of the split file)."""

    testset: str
    ids: list[str]
    labels: list[str]
    per_sample: dict[str, np.ndarray]  # "ciou" [+ "iou", "f_score"] [+ the same with "_ogl"]
    scores: dict[str, Any]
    missing: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    maps: np.ndarray | None = None
    ogl_maps: np.ndarray | None = None
    #: with ``confidences``: per-sample ``ciou`` and ``confidence`` of the centre prior and random maps
    trivial: dict[str, dict[str, np.ndarray]] | None = None
    #: of an extended set: its negatives as :func:`score_real_negatives` gives them
    negatives: dict[str, Any] | None = None

    def write(self, out_dir: str | os.PathLike, extra_scores: dict[str, Any] | None = None) -> None:
        """``per_sample.csv``, ``missing.csv``, ``skipped.csv``, the kept maps (``maps.npz``, ``maps_ogl.npz``) and,
        last, ``scores.json`` into ``out_dir``: a folder with ``scores.json`` holds a complete set."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        columns = list(self.per_sample)
        rows = [[i, *(f"{self.per_sample[c][k]:.6f}" for c in columns[:1]), lab,
                 *(f"{self.per_sample[c][k]:.6f}" for c in columns[1:])] for k, (i, lab) in enumerate(zip(self.ids, self.labels))]
        write_rows(out / "per_sample.csv", ["id", columns[0], "class", *columns[1:]], rows)
        write_rows(out / "missing.csv", ["id", "reason"], self.missing)
        write_rows(out / "skipped.csv", ["id", "reason"], self.skipped)
        for name, maps in (("maps.npz", self.maps), ("maps_ogl.npz", self.ogl_maps)):
            if maps is not None:
                _atomic_savez(out / name, dict(zip(self.ids, maps)))
        if self.negatives is not None:
            neg = self.negatives
            write_rows(out / "negatives.csv", ["id", "confidence"],
                       [(i, f"{c:.6f}") for i, c in zip(neg["ids"], neg["confidence"]["model"])])
            if neg["maps"] is not None:
                _atomic_savez(out / "maps_negatives.npz", dict(zip(neg["ids"], neg["maps"])))
        write_json(out / "scores.json", {"testset": self.testset, **self.scores, **(extra_scores or {})})


#: The files an evaluation writes into its ``--out`` folder.
RESULT_FILES = ("scores.json", "per_sample.csv", "missing.csv", "skipped.csv", "maps.npz", "maps_ogl.npz",
                "negatives.csv", "maps_negatives.npz")


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _score_maps(maps: torch.Tensor, gt: torch.Tensor, segmentation: bool) -> dict[str, torch.Tensor]:
    out = {"ciou": metrics.ciou(maps, gt)}
    if segmentation:
        out["iou"] = metrics.mask_iou(maps, gt)
        out["f_score"] = metrics.f_score(maps, gt)
    return {k: v.cpu() for k, v in out.items()}


def _summary(columns: dict[str, list[torch.Tensor]], suffix: str = "") -> dict[str, float]:
    out = metrics.summarise(torch.cat(columns["ciou" + suffix]))
    if "iou" + suffix in columns:
        out.update(metrics.summarise_segmentation(torch.cat(columns["iou" + suffix]), torch.cat(columns["f_score" + suffix])))
    return out


def _score_trivial(gt: torch.Tensor, prior: torch.Tensor, gen: torch.Generator,
                   base: dict[str, dict[str, list[torch.Tensor]]], *, segmentation: bool, confidences: bool) -> None:
    """A batch's scores of the centre prior, a random map (drawn from ``gen``) and the oracle, appended to ``base``;
    with ``confidences`` also the first two's confidences (the extended protocol)."""
    b = gt.shape[0]
    trivial = {"centre_prior": prior.expand(b, -1, -1),
               "random": torch.rand(b, MAP_SIZE, MAP_SIZE, generator=gen).to(gt.device),
               "oracle": oracle_maps(gt).to(gt.device)}
    for name, m in trivial.items():
        for k, v in _score_maps(m, gt, segmentation).items():
            base[name].setdefault(k, []).append(v)
        if confidences and name in EXTENDED_TRIVIAL:
            base[name].setdefault("confidence", []).append(metrics.map_confidence(m).cpu())


@torch.no_grad()
def evaluate_testset(model: torch.nn.Module, dataset: RealAVDataset, *, batch_size: int = 64,
                     device: torch.device | str = "cpu", num_workers: int = 0, skip_bad: bool = False,
                     keep_maps: bool = False, object_network: torch.nn.Module | None = None, seed: int = 0,
                     progress: bool = True, confidences: bool = False) -> BenchmarkResult:
    """Localise and score every sample of a real test set, batched on ``device``.

    Batches group clips whose spectrograms share a width, so that native sample rates may differ. Scores: cIoU
    (AP50, mean, AUC) and, for masks, mIoU and F-score; beside them the centred Gaussian, random and oracle maps
    (``baselines``), and with ``object_network`` the OGL fused maps (``ogl``). An undecodable file raises
    :class:`FnacError` naming it, or with ``skip_bad`` is listed in ``result.skipped``. ``confidences`` adds each
    sample's confidence (:func:`fnac_lab.metrics.map_confidence`) as a column and keeps the centre prior's and random
    map's per-sample cIoU and confidence (``result.trivial``), for the extended protocol; no score changes with it.
    """
    device = torch.device(device)
    model.eval()
    segmentation = dataset.gt == "mask"
    skipped = list(dataset.skipped)
    widths = dataset.spectrogram_widths()
    good = []
    for i, w in enumerate(widths):
        if isinstance(w, str):
            if not skip_bad:
                raise FnacError(w)
            skipped.append((dataset.ids[i], w))
        else:
            good.append(i)
    batches = [[good[k] for k in b] for b in width_batches([widths[i] for i in good], batch_size)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                                         collate_fn=dataset.collate_lenient, pin_memory=device.type == "cuda")
    gen = torch.Generator().manual_seed(seed)
    prior = centre_prior().to(device)
    columns: dict[str, list[torch.Tensor]] = {}
    base: dict[str, dict[str, list[torch.Tensor]]] = {"centre_prior": {}, "random": {}, "oracle": {}}
    order, kept, kept_ogl = [], [], []
    for batch, errors in tqdm(loader, total=len(batches), desc=dataset.name or "evaluate", disable=not progress,
                              leave=False):
        for ident, reason in errors:
            if not skip_bad:
                raise FnacError(reason)
            skipped.append((ident, reason))
        if batch is None:
            continue
        image = normalise_images(batch["image"].to(device, non_blocking=True))
        spec = batch["spec"].to(device, non_blocking=True).float()
        gt = batch["gt"].to(device)
        maps = model.localise(image, spec).float()
        scored = {"": maps}
        if object_network is not None:
            scored["_ogl"] = fuse_maps(maps, object_network(image))
        for suffix, m in scored.items():
            for k, v in _score_maps(m, gt, segmentation).items():
                columns.setdefault(k + suffix, []).append(v)
        if confidences:
            columns.setdefault("confidence", []).append(metrics.map_confidence(maps, tau=model.tau).cpu())
        _score_trivial(gt, prior, gen, base, segmentation=segmentation, confidences=confidences)
        order.extend(batch["index"].tolist())
        if keep_maps:
            kept.append(maps.cpu().numpy())
            if object_network is not None:
                kept_ogl.append(scored["_ogl"].cpu().numpy())
    if not order:
        raise FnacError(f"no sample of {dataset.name} could be evaluated ({len(dataset.missing)} missing, "
                        f"{len(skipped)} skipped)")
    restore = np.argsort(np.array(order), kind="stable")
    per_sample = {k: torch.cat(v).numpy()[restore] for k, v in columns.items()}
    scores: dict[str, Any] = {**_summary(columns), "n_samples": len(order), "n_missing": len(dataset.missing),
                              "n_skipped": len(skipped)}
    if object_network is not None:
        scores["ogl"] = _summary(columns, "_ogl")
    scores["baselines"] = {name: _summary(cols) for name, cols in base.items()}
    labels = [dataset.samples[i].label for i in np.array(order)[restore]]
    return BenchmarkResult(
        testset=dataset.name, ids=[dataset.ids[i] for i in np.array(order)[restore]], labels=labels,
        per_sample=per_sample, scores=scores, missing=list(dataset.missing), skipped=skipped,
        maps=np.concatenate(kept)[restore] if keep_maps else None,
        ogl_maps=np.concatenate(kept_ogl)[restore] if keep_maps and object_network is not None else None,
        trivial={name: {k: torch.cat(base[name][k]).numpy()[restore] for k in ("ciou", "confidence")}
                 for name in EXTENDED_TRIVIAL} if confidences else None)


@torch.no_grad()
def score_real_negatives(model: torch.nn.Module, dataset: RealAVDataset, *, batch_size: int = 64,
                         device: torch.device | str = "cpu", num_workers: int = 0, skip_bad: bool = False,
                         keep_maps: bool = False, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Confidences of an extended set's negatives, batched by spectrogram width as :func:`evaluate_testset` batches:
    ``{"ids", "confidence": {"model", "centre_prior", "random"}, "maps", "skipped"}`` in the order of the list (the
    random map from :func:`fnac_lab.evaluate.negatives_generator`). Undecodable files as in
    :func:`evaluate_testset`."""
    device = torch.device(device)
    model.eval()
    widths = dataset.spectrogram_widths()
    skipped = [(dataset.ids[i], w) for i, w in enumerate(widths) if isinstance(w, str)]
    if skipped and not skip_bad:
        raise FnacError(skipped[0][1])
    good = [i for i, w in enumerate(widths) if not isinstance(w, str)]
    batches = [[good[k] for k in b] for b in width_batches([widths[i] for i in good], batch_size)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                                         collate_fn=dataset.collate_lenient, pin_memory=device.type == "cuda")
    gen, prior = negatives_generator(seed), metrics.map_confidence(centre_prior()[None])
    conf: dict[str, list[torch.Tensor]] = {"model": [], "centre_prior": [], "random": []}
    order, kept = [], []
    for batch, errors in tqdm(loader, total=len(batches), desc=dataset.name or "negatives", disable=not progress,
                              leave=False):
        if errors and not skip_bad:
            raise FnacError(errors[0][1])
        skipped.extend(errors)
        if batch is None:
            continue
        maps = model.localise(normalise_images(batch["image"].to(device, non_blocking=True)),
                              batch["spec"].to(device, non_blocking=True).float()).float()
        b = maps.shape[0]
        conf["model"].append(metrics.map_confidence(maps, tau=model.tau).cpu())
        conf["centre_prior"].append(prior.expand(b))
        conf["random"].append(metrics.map_confidence(torch.rand(b, MAP_SIZE, MAP_SIZE, generator=gen)))
        order.extend(batch["index"].tolist())
        if keep_maps:
            kept.append(maps.cpu().numpy())
    if not order:
        raise FnacError(f"no negative of {dataset.name} could be evaluated ({len(dataset.missing)} missing, "
                        f"{len(skipped)} skipped)")
    restore = np.argsort(np.array(order), kind="stable")
    return {"ids": [dataset.ids[i] for i in np.array(order)[restore]],
            "confidence": {k: torch.cat(v).numpy()[restore] for k, v in conf.items()},
            "maps": np.concatenate(kept)[restore] if keep_maps else None, "skipped": skipped}


def add_negatives(result: BenchmarkResult, negatives: dict[str, Any], missing: list[tuple[str, str]]
                  ) -> BenchmarkResult:
    """``result`` (of :func:`evaluate_testset` with ``confidences``) with its set's negatives: the extended
    protocol's scores of the audio-visual map and of the centre prior and random maps, ``n_negatives_missing`` and
    ``n_negatives_skipped``; the negatives' missing and skipped files join the result's lists."""
    result.scores.update(extended_scores(result.per_sample["confidence"], result.per_sample["ciou"],
                                         negatives["confidence"]["model"]))
    for name in EXTENDED_TRIVIAL:
        result.scores["baselines"][name].update(extended_scores(result.trivial[name]["confidence"],
                                                                result.trivial[name]["ciou"],
                                                                negatives["confidence"][name]))
    result.scores.update(n_negatives_missing=len(missing), n_negatives_skipped=len(negatives["skipped"]))
    result.missing, result.skipped = result.missing + list(missing), result.skipped + negatives["skipped"]
    result.negatives = negatives
    return result


def negatives_list(testset: str, data_root: str | os.PathLike, negatives: str | os.PathLike | None) -> Path:
    """The negatives list of an extended set: ``negatives``, else its published name in ``data_root``."""
    if negatives is not None:
        return Path(negatives)
    default = Path(data_root) / EXTENDED_TESTSETS[testset][1]
    if not default.is_file():
        raise FnacError(f"--testset {testset} needs its negatives list: pass --negatives "
                        f"{EXTENDED_TESTSETS[testset][1]} or place it in {data_root}")
    return default


def evaluate_checkpoint(checkpoint: str | os.PathLike, *, testset: str, data_root: str | os.PathLike,
                        annotations: str | os.PathLike, out: str | os.PathLike, split_csv: str | os.PathLike | None = None,
                        batch_size: int | None = None, device: str = "auto", num_workers: int = 0,
                        skip_bad: bool = False, save_maps: bool = False, ogl: bool = False,
                        ogl_weights: str | os.PathLike | None = None, ogl_object: str = "mean_abs",
                        audio_rate: int | None = None, progress: bool = True,
                        negatives: str | os.PathLike | None = None) -> BenchmarkResult:
    """Evaluate a checkpoint on a real test set and write the result files into ``out``.

    ``audio_rate`` defaults to the rate the checkpoint was trained with (``None``: native rates); ``ogl_object``
    is the object map's channel reduction (:data:`fnac_lab.ogl.OBJECT_REDUCTIONS`; published: ``mean_abs``). An
    extended set also reads its negatives list (``negatives``, default ``DATA_ROOT/<its published name>``).
    """
    model, cfg, _ = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    rate = audio_rate if audio_rate is not None else getattr(cfg, "audio_rate", None)
    dataset = open_testset(testset, data_root, annotations, split_csv=split_csv, audio_rate=rate, skip_bad=skip_bad)
    negative_set = None
    if testset in EXTENDED_TESTSETS:
        negative_set = open_negatives(data_root, negatives_list(testset, data_root, negatives), audio_rate=rate,
                                      name=f"{testset} negatives")
    object_network = None
    if ogl:
        object_network = load_object_network(ogl_weights, reduce=ogl_object).to(dev)
    out = output_folder(out)
    with folder_lock(out):  # another evaluation writing into out is refused before its files are touched
        for name in RESULT_FILES:  # a stale set from an earlier run must never sit beside this run's files
            (out / name).unlink(missing_ok=True)
        try:
            result = evaluate_testset(model.to(dev), dataset, batch_size=batch_size or cfg.eval_batch_size,
                                      device=dev, num_workers=num_workers, skip_bad=skip_bad, keep_maps=save_maps,
                                      object_network=object_network, seed=cfg.seed, progress=progress,
                                      confidences=negative_set is not None)
            if negative_set is not None:
                scored = score_real_negatives(model, negative_set, batch_size=batch_size or cfg.eval_batch_size,
                                              device=dev, num_workers=num_workers, skip_bad=skip_bad,
                                              keep_maps=save_maps, seed=cfg.seed, progress=progress)
                result = add_negatives(result, scored, negative_set.missing)
        except FnacError:
            out.mkdir(parents=True, exist_ok=True)
            write_rows(out / "missing.csv", ["id", "reason"], dataset.missing)
            raise
        result.write(out, extra_scores={"checkpoint": str(checkpoint), "audio_rate": rate,
                                        **({"ogl_object": ogl_object} if ogl else {})})
    return result
