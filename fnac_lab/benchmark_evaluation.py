"""Scoring a checkpoint on a real benchmark's test set (Flickr-SoundNet, VGG-SS, AVSBench-S4), batched on the device,
with the published conventions of :mod:`fnac_lab.metrics`, beside the reference maps of :mod:`fnac_lab.scoring`
and, optionally, object-guided localisation (:mod:`fnac_lab.ogl`). The extended sets (``flickr_extended``,
``vggss_extended``; SLAVC, Mo and Morgado, NeurIPS 2022) add their negatives and the extended protocol's scores of
the audio-visual map (:func:`fnac_lab.scoring.extended_scores`). Writes the result files of
``fnac-lab evaluate --testset``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from . import metrics
from .checkpoint import load_checkpoint
from .data.catalogue import EXTENDED_TESTSETS
from .data.real import RealAVDataset, open_negatives, open_testset
from .scoring import (EXTENDED_REFERENCE_MAPS, extended_scores, negatives_confidences, negatives_generator, remove_results,
                      score_batches, write_per_sample)
from .ogl import load_object_network
from .utils import FnacError, atomic_savez, folder_lock, output_folder, resolve_device, write_json, write_rows


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
    reference_maps: dict[str, dict[str, np.ndarray]] | None = None
    #: of an extended set: its negatives as :func:`score_real_negatives` gives them
    negatives: dict[str, Any] | None = None

    def write(self, out_dir: str | os.PathLike, extra_scores: dict[str, Any] | None = None) -> None:
        """``per_sample.csv``, ``missing.csv``, ``skipped.csv``, the kept maps (``maps.npz``, ``maps_ogl.npz``) and,
        last, ``scores.json`` into ``out_dir``: a folder with ``scores.json`` holds a complete set."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_per_sample(out / "per_sample.csv", self.ids, self.labels, self.per_sample)
        write_rows(out / "missing.csv", ["id", "reason"], self.missing)
        write_rows(out / "skipped.csv", ["id", "reason"], self.skipped)
        for name, maps in (("maps.npz", self.maps), ("maps_ogl.npz", self.ogl_maps)):
            if maps is not None:
                atomic_savez(out / name, dict(zip(self.ids, maps)))
        if self.negatives is not None:
            neg = self.negatives
            write_rows(out / "negatives.csv", ["id", "confidence"],
                       [(i, f"{c:.6f}") for i, c in zip(neg["ids"], neg["confidence"]["model"])])
            if neg["maps"] is not None:
                atomic_savez(out / "maps_negatives.npz", dict(zip(neg["ids"], neg["maps"])))
        write_json(out / "scores.json", {"testset": self.testset, **self.scores, **(extra_scores or {})})


def _summary(columns: dict[str, torch.Tensor], suffix: str = "") -> dict[str, float]:
    out = metrics.summarise(columns["ciou" + suffix])
    if "iou" + suffix in columns:
        out.update(metrics.summarise_segmentation(columns["iou" + suffix], columns["f_score" + suffix]))
    return out


def _width_batches(dataset: RealAVDataset, batch_size: int, *, num_workers: int, device: torch.device,
                   skip_bad: bool, skipped: list[tuple[str, str]]) -> tuple[Iterator[dict], int]:
    """The set's batches (clips grouped by spectrogram width) and how many there are. An undecodable file raises
    :class:`FnacError` naming it, or with ``skip_bad`` is appended to ``skipped``."""
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

    def decoded() -> Iterator[dict]:
        for batch, errors in loader:
            for ident, reason in errors:
                if not skip_bad:
                    raise FnacError(reason)
                skipped.append((ident, reason))
            if batch is not None:
                yield batch

    return decoded(), len(batches)


def evaluate_testset(model: torch.nn.Module, dataset: RealAVDataset, *, batch_size: int = 64,
                     device: torch.device | str = "cpu", num_workers: int = 0, skip_bad: bool = False,
                     keep_maps: bool = False, object_network: torch.nn.Module | None = None, seed: int = 0,
                     progress: bool = True, confidences: bool = False) -> BenchmarkResult:
    """Localise and score every sample of a real test set, batched on ``device`` (:func:`fnac_lab.scoring.score_batches`).

    Batches group clips whose spectrograms share a width, so that native sample rates may differ. Scores: cIoU
    (AP50, mean, AUC) and, for masks, mIoU and F-score; beside them the centred Gaussian, random and oracle maps
    (``reference_maps``), and with ``object_network`` the OGL fused maps (``ogl``). An undecodable file raises
    :class:`FnacError` naming it, or with ``skip_bad`` is listed in ``result.skipped``. ``confidences`` adds each
    sample's confidence (:func:`fnac_lab.metrics.map_confidence`) as a column and keeps the centre prior's and random
    map's per-sample cIoU and confidence (``result.reference_maps``), for the extended protocol; no score changes with it.
    """
    device = torch.device(device)
    skipped = list(dataset.skipped)
    batches, total = _width_batches(dataset, batch_size, num_workers=num_workers, device=device, skip_bad=skip_bad,
                                    skipped=skipped)
    scored = score_batches(model, batches, total=total, device=device, generator=torch.Generator().manual_seed(seed),
                           ground_truth=lambda batch: batch["gt"].to(device), segmentation=dataset.gt == "mask",
                           confidences=confidences, keep_maps=keep_maps, object_network=object_network,
                           desc=dataset.name or "evaluate", progress=progress)
    if not scored.ids:
        raise FnacError(f"no sample of {dataset.name} could be evaluated ({len(dataset.missing)} missing, "
                        f"{len(skipped)} skipped)")
    restore, positions = scored.set_order(), scored.set_positions()
    scores: dict[str, Any] = {**_summary(scored.columns), "n_samples": len(restore), "n_missing": len(dataset.missing),
                              "n_skipped": len(skipped)}
    if object_network is not None:
        scores["ogl"] = _summary(scored.columns, "_ogl")
    scores["reference_maps"] = {name: _summary(cols) for name, cols in scored.reference_maps.items()}
    return BenchmarkResult(
        testset=dataset.name, ids=[dataset.ids[i] for i in positions],
        labels=[dataset.samples[i].label for i in positions],
        per_sample={k: v.numpy()[restore] for k, v in scored.columns.items()}, scores=scores,
        missing=list(dataset.missing), skipped=skipped,
        maps=scored.maps[restore] if keep_maps else None,
        ogl_maps=scored.ogl_maps[restore] if keep_maps and object_network is not None else None,
        reference_maps={name: {k: scored.reference_maps[name][k].numpy()[restore] for k in ("ciou", "confidence")}
                 for name in EXTENDED_REFERENCE_MAPS} if confidences else None)


def score_real_negatives(model: torch.nn.Module, dataset: RealAVDataset, *, batch_size: int = 64,
                         device: torch.device | str = "cpu", num_workers: int = 0, skip_bad: bool = False,
                         keep_maps: bool = False, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Confidences of an extended set's negatives, batched by spectrogram width as :func:`evaluate_testset` batches:
    ``{"ids", "confidence": {"model", "centre_prior", "random"}, "maps", "skipped"}`` in the order of the list (the
    random map from :func:`fnac_lab.scoring.negatives_generator`). Undecodable files as in
    :func:`evaluate_testset`."""
    device = torch.device(device)
    skipped: list[tuple[str, str]] = []
    batches, total = _width_batches(dataset, batch_size, num_workers=num_workers, device=device, skip_bad=skip_bad,
                                    skipped=skipped)
    scored = score_batches(model, batches, total=total, device=device, generator=negatives_generator(seed),
                           keep_maps=keep_maps, desc=dataset.name or "negatives", progress=progress)
    if not scored.ids:
        raise FnacError(f"no negative of {dataset.name} could be evaluated ({len(dataset.missing)} missing, "
                        f"{len(skipped)} skipped)")
    restore = scored.set_order()
    return {"ids": [dataset.ids[i] for i in scored.set_positions()],
            "confidence": {k: v[restore] for k, v in negatives_confidences(scored).items()},
            "maps": scored.maps[restore] if keep_maps else None, "skipped": skipped}


def add_negatives(result: BenchmarkResult, negatives: dict[str, Any], missing: list[tuple[str, str]]
                  ) -> BenchmarkResult:
    """``result`` (of :func:`evaluate_testset` with ``confidences``) with its set's negatives: the extended
    protocol's scores of the audio-visual map and of the centre prior and random maps, ``n_negatives_missing`` and
    ``n_negatives_skipped``; the negatives' missing and skipped files join the result's lists."""
    result.scores.update(extended_scores(result.per_sample["confidence"], result.per_sample["ciou"],
                                         negatives["confidence"]["model"]))
    for name in EXTENDED_REFERENCE_MAPS:
        result.scores["reference_maps"][name].update(extended_scores(result.reference_maps[name]["confidence"],
                                                                result.reference_maps[name]["ciou"],
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
        remove_results(out)
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
