"""Readers for the real benchmarks: Flickr-SoundNet, VGG-Sound / VGG-SS (heard, unheard) and AVSBench-S4.

Layout of a data root (REFERENCE 5): ``ROOT/frames/ID.(jpg|jpeg|png)`` and ``ROOT/audio/ID.wav``, or both flat
in ``ROOT``. Training sets are such a root filtered by an id list (:data:`TRAINSETS`); test sets add their
annotations (:data:`TESTSETS`):

- ``flickr``: ``ANNOTATIONS/ID.xml`` per image; every ``bbox`` element (any depth) holds one leading
  non-coordinate child, then xmin, ymin, xmax, ymax in 256-px coordinates, read by position; the ground truth is
  the annotator consensus ``clip(sum(boxes) / 2, max=1)`` after ``int(224 * v / 256)``.
- ``vggss``, ``vggss_heard``, ``vggss_unheard``: boxes and class per id from ``vggss.json`` (normalised
  ``[x0, y0, x1, y1]``, mapped with ``int(clip(v, 0, 1) * 224)``); binary union of the boxes.
- ``avsbench_s4``: one binary mask per frame, ``ANNOTATIONS/ID.png`` (pixels > 0 are the sounding object),
  resized to 224 x 224 (nearest) when needed.

Ids come from a split file (first column; a second column, when present, is the class) or, without one, from the
annotations. Listed ids whose frame, audio or annotation is absent are kept in ``dataset.missing`` with the
reason; nothing is dropped silently.

Pre-processing (published): images decoded to uint8 RGB; train: shorter side to 246 (bicubic), random 224 crop,
random horizontal flip; test: 224 x 224 (bicubic). Normalisation with the ImageNet statistics happens later, on
the batch, on the device. Audio: :func:`fnac_lab.audio.published_spectrogram` at the native rate (mono mix,
centre 3 s, tiling), divided by 12. SpecAugment is applied by the training loop on the batch (or per item with
``audio_augment=True``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile
import torch
import torchaudio.functional
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from tqdm.auto import tqdm

from .. import metrics
from ..audio import (NOVERLAP, NPERSEG, WINDOW_SECONDS, AudioDecodeError, load_audio, normalise_spectrogram,
                     published_spectrogram)
from ..models import MAP_SIZE
from ..ogl import fuse_maps
from ..utils import FnacError, atomic_write_text, normalise_images, write_json

TRAIN_RESIZE = 246  #: published train transform: shorter side to 246 px, then a random 224 crop
CROP = 224
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
AUDIO_EXTENSION = ".wav"

#: Training sets: name -> default id-list file (looked up as ``ROOT/<file>`` unless ``train_ids`` is given);
#: ``None`` means every clip of the layout.
TRAINSETS: dict[str, str | None] = {
    "flickr_10k": "flickr_10k.txt",  # Flickr-SoundNet, 10k clips
    "flickr_144k": "flickr_144k.txt",  # Flickr-SoundNet, 144k clips
    "vggss_10k": "vggss_10k.txt",  # VGG-Sound, 10k clips
    "vggss_144k": "vggss_144k.txt",  # VGG-Sound, 144k clips
    "vggss_heard": "vggss_heard.txt",  # VGG-Sound clips of the 110 heard classes (open-set training)
    "vggsound_full": None,  # every VGG-Sound clip present in the layout
}
#: Test sets and the kind of ground truth they carry.
TESTSETS: dict[str, str] = {
    "flickr": "flickr", "vggss": "vggss", "vggss_heard": "vggss", "vggss_unheard": "vggss", "avsbench_s4": "mask",
}


class FileDecodeError(FnacError):
    """An image, mask or annotation file exists but cannot be decoded."""


# -- files on disk ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Where a data root keeps frames and audio: ``ROOT/frames`` + ``ROOT/audio``, or both flat in ``ROOT``."""

    root: Path
    frames: Path
    audio: Path

    @classmethod
    def find(cls, root: str | os.PathLike) -> "Layout":
        root = Path(root)
        if not root.is_dir():
            raise FnacError(f"{root}: data root not found")
        frames, audio = root / "frames", root / "audio"
        if frames.is_dir() != audio.is_dir():
            have, lack = ("frames", "audio") if frames.is_dir() else ("audio", "frames")
            raise FnacError(f"{root}: has {have}/ but no {lack}/ (expected both, or frames and audio flat in {root})")
        return cls(root, frames, audio) if frames.is_dir() else cls(root, root, root)

    def index(self) -> tuple[dict[str, Path], dict[str, Path]]:
        """Frame and audio files by id, from one listing of each directory."""
        frames: dict[str, Path] = {}
        audio: dict[str, Path] = {}
        for directory, found, exts in ((self.frames, frames, IMAGE_EXTENSIONS), (self.audio, audio, (AUDIO_EXTENSION,))):
            for entry in os.scandir(directory):
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() not in exts or not entry.is_file():
                    continue
                if stem in found:
                    raise FnacError(f"{directory}: two files for id {stem!r} ({found[stem].name}, {entry.name})")
                found[stem] = Path(entry.path)
        return frames, audio


@dataclass(frozen=True)
class Sample:
    id: str
    frame: Path
    audio: Path
    label: str = ""
    target: Any = None  # pixel boxes (flickr / vggss) or a mask path (avsbench_s4)


def read_id_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(id, class)`` per row of a list file (csv or txt; first column the id, an optional second the class)."""
    path = Path(path)
    if not path.is_file():
        raise FnacError(f"{path}: id list not found")
    rows: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    with open(path, newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or not row[0].strip():
                continue
            ident = row[0].strip()
            if ident in seen:
                raise FnacError(f"{path}:{line}: id {ident!r} repeats line {seen[ident]}")
            seen[ident] = line
            rows.append((ident, row[1].strip() if len(row) > 1 else ""))
    if not rows:
        raise FnacError(f"{path}: id list is empty")
    return rows


def read_labels(path: str | os.PathLike) -> dict[str, str]:
    """Class per id from ``id,class`` rows, or from VGG-Sound's ``vggsound.csv`` (``ytid,start,class,split``:
    the id is ``ytid_start`` with the start zero-padded to 6 digits)."""
    path = Path(path)
    if not path.is_file():
        raise FnacError(f"{path}: label file not found")
    out: dict[str, str] = {}
    with open(path, newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row:
                continue
            if len(row) == 4 and row[1].strip().isdigit():
                ident, label = f"{row[0].strip()}_{int(row[1]):06d}", row[2].strip()
            elif len(row) >= 2:
                ident, label = row[0].strip(), row[1].strip()
            else:
                raise FnacError(f"{path}:{line}: expected id,class or ytid,start,class,split, got {row!r}")
            out[ident] = label
    return out


def read_flickr_boxes(path: str | os.PathLike) -> list[tuple[float, float, float, float]]:
    """Boxes of a Flickr-SoundNet XML annotation in 256-px coordinates, one per ``bbox`` element (any depth)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise FileDecodeError(f"{path}: cannot read annotation ({exc})") from exc
    boxes = []
    for element in root.iter("bbox"):
        children = list(element)
        if len(children) != 5:
            raise FileDecodeError(f"{path}: a bbox holds a leading child then xmin, ymin, xmax, ymax; "
                                   f"found {len(children)} children")
        try:
            boxes.append(tuple(float(c.text) for c in children[1:]))
        except (TypeError, ValueError):
            raise FileDecodeError(f"{path}: bbox coordinates are not numbers "
                                   f"({[c.text for c in children[1:]]})") from None
    if not boxes:
        raise FileDecodeError(f"{path}: no bbox element")
    return boxes  # type: ignore[return-value]


def read_vggss_annotations(path: str | os.PathLike) -> dict[str, tuple[str, list[list[float]]]]:
    """``{id: (class, boxes)}`` from ``vggss.json`` (a list of ``{"file", "class", "bbox": [[x0, y0, x1, y1], ...]}``)."""
    path = Path(path)
    if not path.is_file():
        raise FnacError(f"{path}: VGG-SS annotation file not found")
    try:
        entries = json.loads(path.read_text())
        out = {}
        for e in entries:
            boxes = [list(map(float, b)) for b in e["bbox"]]
            if not boxes or any(len(b) != 4 for b in boxes):
                raise ValueError(f"entry {e['file']!r} needs boxes of four numbers")
            out[str(e["file"])] = (str(e.get("class", "")), boxes)
    except (ValueError, KeyError, TypeError) as exc:
        raise FnacError(f"{path}: not a VGG-SS annotation file ({exc})") from exc
    return out


# -- per-sample decoding ----------------------------------------------------------------------------------------

def read_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as uint8 RGB ``[3, H, W]`` (torchvision decoder; EXIF orientation ignored, as PIL does)."""
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except Exception as exc:  # torchvision raises RuntimeError or ValueError by format
        raise FileDecodeError(f"{path}: cannot decode image ({exc})") from exc
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = v2.functional.to_dtype(image, torch.uint8, scale=True)
    return image


def read_mask(path: str | os.PathLike, size: int = MAP_SIZE) -> torch.Tensor:
    """A binary mask file as float32 ``[size, size]`` (pixels > 0 are foreground; nearest resize at pixel centres, as PIL)."""
    try:
        mask = decode_image(str(path), mode=ImageReadMode.GRAY)
    except Exception as exc:
        raise FileDecodeError(f"{path}: cannot decode mask ({exc})") from exc
    if mask.shape[-2:] != (size, size):
        mask = v2.functional.resize(mask, [size, size], interpolation=v2.InterpolationMode.NEAREST_EXACT)
    return (mask[0] > 0).to(torch.float32)


def resize_for_training(image: torch.Tensor) -> torch.Tensor:
    """Shorter side to 246 px, bicubic (the first step of the published train transform)."""
    return v2.functional.resize(image, [TRAIN_RESIZE], interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


def resize_for_testing(image: torch.Tensor) -> torch.Tensor:
    """224 x 224, bicubic (the published test transform)."""
    return v2.functional.resize(image, [CROP, CROP], interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


#: The random part of the published train transform, applied after :func:`resize_for_training`.
TRAIN_AUGMENT = v2.Compose([v2.RandomCrop(CROP), v2.RandomHorizontalFlip()])


def spectrogram_frames(sample_rate: int) -> int:
    """Time frames of the published spectrogram of a 3 s window at ``sample_rate``."""
    return (int(sample_rate * WINDOW_SECONDS) - NPERSEG) // (NPERSEG - NOVERLAP) + 1


def audio_sample_rate(path: str | os.PathLike) -> int:
    """The sample rate from an audio file's header."""
    try:
        return int(soundfile.info(str(path)).samplerate)
    except Exception as exc:
        raise AudioDecodeError(f"{path}: cannot decode audio ({exc})") from exc


def clip_spectrogram(path: str | os.PathLike, audio_rate: int | None = None) -> torch.Tensor:
    """The published log-spectrogram ``[257, F]`` of an audio file (not yet divided by 12).

    ``audio_rate`` resamples first (torchaudio, a deviation from the published native-rate pipeline that lets
    clips of different rates share a batch); ``None`` keeps the native rate.
    """
    samples, rate = load_audio(path)
    if audio_rate is not None and rate != audio_rate:
        samples, rate = torchaudio.functional.resample(samples, rate, audio_rate), audio_rate
    return published_spectrogram(samples, rate)


def mask_bands(spec: torch.Tensor, max_width: int = 10) -> torch.Tensor:
    """One frequency and one time mask on one spectrogram ``[..., freq, time]``, filled with 0, in place.

    The distribution of :func:`fnac_lab.audio.spec_augment` (width ``floor(U * max_width)``, start
    ``floor(U' * (size - U * max_width))``) for a single item, as two slice assignments: the batched masks (or
    torchaudio's) cost about 0.5 ms per item on a CPU core, more than reading the item from the cache.
    """
    for axis in (-2, -1):
        size = spec.shape[axis]
        width, where = torch.rand(2).tolist()
        width *= max_width
        start = int(where * (size - width))
        spec.narrow(axis, start, min(int(width), size - start)).zero_()
    return spec


# -- datasets ---------------------------------------------------------------------------------------------------

DECODE_ERRORS = (AudioDecodeError, FileDecodeError)


class RealAVDataset(torch.utils.data.Dataset):
    """Frames and audio of a list of :class:`Sample` with the published pre-processing.

    Items: ``image`` uint8 ``[3, 224, 224]``, ``spec`` float32 ``[1, 257, F]`` (normalised), ``id``, ``index``,
    ``label`` (class name, when every sample has one) and, for test sets, ``gt`` float32 ``[224, 224]``. A file that cannot be
    decoded gives an item ``{"id", "index", "error"}``; :meth:`collate` refuses it, :meth:`collate_lenient`
    sets it aside.
    """

    def __init__(self, samples: Sequence[Sample], *, split: str = "test", gt: str | None = None,
                 audio_rate: int | None = None, audio_augment: bool = False, name: str = "",
                 missing: Sequence[tuple[str, str]] = (), skipped: Sequence[tuple[str, str]] = ()):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if gt not in (None, "flickr", "vggss", "mask"):
            raise ValueError(f"unknown ground-truth kind {gt!r}")
        self.samples = list(samples)
        self.ids = [s.id for s in self.samples]
        self.split, self.gt, self.audio_rate, self.audio_augment, self.name = split, gt, audio_rate, audio_augment, name
        self.missing = list(missing)  # (id, reason) for listed ids absent on disk
        self.skipped = list(skipped)  # (id, reason) for files that could not be read
        self.has_labels = bool(self.samples) and all(s.label for s in self.samples)
        if self.has_labels and split == "train":
            code = {c: i for i, c in enumerate(sorted({s.label for s in self.samples}))}
            self.labels = torch.tensor([code[s.label] for s in self.samples])  # for the class-biased sampler

    def __len__(self) -> int:
        return len(self.samples)

    def _ground_truth(self, s: Sample) -> torch.Tensor:
        if self.gt == "mask":
            return read_mask(s.target)
        return metrics.gt_map(s.target, MAP_SIZE, mode=self.gt).to(torch.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        try:
            image = read_image(s.frame)
            image = TRAIN_AUGMENT(resize_for_training(image)) if self.split == "train" else resize_for_testing(image)
            spec = normalise_spectrogram(clip_spectrogram(s.audio, self.audio_rate))[None]
            gt = self._ground_truth(s) if self.gt else None
        except DECODE_ERRORS as exc:
            return {"id": s.id, "index": index, "error": str(exc)}
        if self.audio_augment:
            spec = mask_bands(spec)
        item = {"image": image, "spec": spec, "id": s.id, "index": index}
        if self.has_labels:
            item["label"] = s.label
        if gt is not None:
            item["gt"] = gt
        return item

    def subset(self, indices: Sequence[int], name: str, missing: Sequence[tuple[str, str]] = ()) -> "RealAVDataset":
        return RealAVDataset([self.samples[i] for i in indices], split=self.split, gt=self.gt,
                             audio_rate=self.audio_rate, audio_augment=self.audio_augment, name=name, missing=missing)

    def spectrogram_widths(self) -> list[int | str]:
        """Per sample, the time frames of its spectrogram from the audio header, or the header's error."""
        out: list[int | str] = []
        for s in self.samples:
            try:
                out.append(spectrogram_frames(self.audio_rate or audio_sample_rate(s.audio)))
            except AudioDecodeError as exc:
                out.append(str(exc))
        return out

    def collate(self, items: list[dict]) -> dict[str, Any]:
        """Stack items into a batch; a decode error or spectrograms of different widths raise :class:`FnacError`."""
        for item in items:
            if "error" in item:
                raise FnacError(item["error"])
        widths = {}
        for item in items:
            widths.setdefault(item["spec"].shape[-1], self.samples[item["index"]].audio)
        if len(widths) > 1:
            shown = ", ".join(f"{path}: {w} frames" for w, path in widths.items())
            raise FnacError(f"clips of different sample rates share a batch ({shown}); set audio_rate "
                            f"(e.g. audio_rate=16000) to resample them, or prepare the audio at one rate")
        return default_collate(items)

    def collate_lenient(self, items: list[dict]) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
        """``(batch of the decodable items or None, [(id, error), ...])``."""
        errors = [(it["id"], it["error"]) for it in items if "error" in it]
        good = [it for it in items if "error" not in it]
        return (self.collate(good) if good else None), errors


def resolve_samples(layout: Layout, rows: Sequence[tuple[str, str]], targets: dict[str, Any] | None = None,
                    target_name: str = "annotation") -> tuple[list[Sample], list[tuple[str, str]]]:
    """Samples of the listed ``(id, class)`` rows present on disk, and ``(id, reason)`` for the others."""
    frames, audio = layout.index()
    samples, missing = [], []
    for ident, label in rows:
        reasons = []
        if ident not in frames:
            reasons.append(f"no frame in {layout.frames}")
        if ident not in audio:
            reasons.append(f"no audio in {layout.audio}")
        if targets is not None and ident not in targets:
            reasons.append(f"no {target_name}")
        if reasons:
            missing.append((ident, "; ".join(reasons)))
            continue
        samples.append(Sample(ident, frames[ident], audio[ident], label, targets[ident] if targets is not None else None))
    return samples, missing


def open_trainset(root: str | os.PathLike, trainset: str, *, ids: str | os.PathLike | None = None,
                  labels: str | os.PathLike | None = None, audio_rate: int | None = None,
                  audio_augment: bool = False) -> RealAVDataset:
    """A training set: the layout at ``root`` filtered by the id list of ``trainset`` (or ``ids``)."""
    if trainset not in TRAINSETS:
        raise FnacError(f"unknown training set {trainset!r} (choose from {', '.join(TRAINSETS)})")
    layout = Layout.find(root)
    if ids is None and TRAINSETS[trainset] is not None:
        ids = layout.root / TRAINSETS[trainset]
        if not Path(ids).is_file():
            raise FnacError(f"training set {trainset} needs its id list: place {TRAINSETS[trainset]} in "
                            f"{layout.root} or pass its path (train_ids=PATH)")
    if ids is not None:
        rows = read_id_list(ids)
    else:
        frames, audio = layout.index()
        rows = [(i, "") for i in sorted(set(frames) | set(audio))]
    if labels is not None:
        by_id = read_labels(labels)
        unlabelled = [i for i, _ in rows if i not in by_id]
        if unlabelled:
            raise FnacError(f"{labels}: {len(unlabelled)} training ids have no class (first: {unlabelled[0]!r})")
        rows = [(i, by_id[i]) for i, _ in rows]
    samples, missing = resolve_samples(layout, rows)
    return RealAVDataset(samples, split="train", audio_rate=audio_rate, audio_augment=audio_augment,
                         name=trainset, missing=missing)


def open_testset(testset: str, root: str | os.PathLike, annotations: str | os.PathLike, *,
                 split_csv: str | os.PathLike | None = None, audio_rate: int | None = None,
                 skip_bad: bool = False) -> RealAVDataset:
    """A test set (see the module docstring for the annotation formats).

    ``annotations``: the Flickr XML directory, ``vggss.json``, or the AVSBench mask directory. ``split_csv``
    lists the ids (required for ``vggss_heard`` / ``vggss_unheard``); without it all annotated ids are used.
    An unreadable annotation raises, or with ``skip_bad`` lands in ``dataset.skipped``.
    """
    if testset not in TESTSETS:
        raise FnacError(f"unknown test set {testset!r} (choose from {', '.join(TESTSETS)})")
    if testset in ("vggss_heard", "vggss_unheard") and split_csv is None:
        raise FnacError(f"test set {testset} needs its split file (--split-csv {testset}_test.csv)")
    annotations = Path(annotations)
    kind = TESTSETS[testset]
    rows = read_id_list(split_csv) if split_csv is not None else None
    skipped: list[tuple[str, str]] = []
    targets: dict[str, Any] = {}
    if kind == "vggss":
        entries = read_vggss_annotations(annotations)
        rows = rows if rows is not None else [(i, c) for i, (c, _) in entries.items()]
        for ident, (_, boxes) in entries.items():
            targets[ident] = [metrics.vggss_box_to_pixels(b, MAP_SIZE) for b in boxes]
        rows = [(i, entries[i][0] if i in entries else c) for i, c in rows]
    else:
        if not annotations.is_dir():
            raise FnacError(f"{annotations}: annotation directory not found")
        suffix = ".xml" if kind == "flickr" else ".png"
        files = {p.stem: p for p in annotations.iterdir() if p.suffix.lower() == suffix}
        rows = rows if rows is not None else [(i, "") for i in sorted(files)]
        if kind == "mask":
            targets = files
        else:
            for ident, _ in rows:
                if ident not in files:
                    continue
                try:
                    targets[ident] = [metrics.flickr_box_to_pixels(b, MAP_SIZE) for b in read_flickr_boxes(files[ident])]
                except FileDecodeError as exc:
                    if not skip_bad:
                        raise
                    skipped.append((ident, str(exc)))
    bad = {i for i, _ in skipped}
    samples, missing = resolve_samples(Layout.find(root), [r for r in rows if r[0] not in bad], targets,
                                       target_name="mask" if kind == "mask" else "annotation")
    return RealAVDataset(samples, split="test", gt=kind, audio_rate=audio_rate, name=testset,
                         missing=missing, skipped=skipped)


def validation_split(listed_ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The validation ids: a seeded ``fraction`` of the listed test ids (sorted, then permuted), fixed by the
    list and the seed alone, so that which files are missing on disk never moves a sample between halves."""
    ordered = sorted(listed_ids)
    perm = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(len(ordered))
    return {ordered[i] for i in perm[: int(round(fraction * len(ordered)))]}


def real_splits(cfg) -> dict[str, torch.utils.data.Dataset]:
    """``train`` / ``val`` / ``test`` for ``dataset="real"``: the training set (from ``cache_dir`` when given),
    and the annotated test set split into a seeded validation part (``val_fraction``, used for model selection)
    and the remaining test part (reported, never selected on)."""
    from ..config import ConfigError
    from .cache import CachedAVDataset

    for name in ("test_root", "test_annotations"):
        if getattr(cfg, name) is None:
            raise ConfigError(f"{name}: required for dataset='real' (see README, Real benchmarks)")
    if cfg.cache_dir is not None:
        train = CachedAVDataset(cfg.cache_dir, split="train", audio_augment=False)
        if train.meta["audio_rate"] != cfg.audio_rate:
            raise ConfigError(f"audio_rate={cfg.audio_rate}: the cache {cfg.cache_dir} holds audio_rate="
                              f"{train.meta['audio_rate']} (none = native rates)")
        if cfg.train_labels is not None:
            train.set_labels(read_labels(cfg.train_labels), source=cfg.train_labels)
    elif cfg.train_root is None:
        raise ConfigError("train_root: required for dataset='real' unless cache_dir is given")
    else:
        train = open_trainset(cfg.train_root, cfg.trainset, ids=cfg.train_ids, labels=cfg.train_labels,
                              audio_rate=cfg.audio_rate)
    if len(train) < cfg.batch_size:
        raise ConfigError(f"batch_size={cfg.batch_size}: exceeds the {len(train)} training clips found")
    full = open_testset(cfg.testset, cfg.test_root, cfg.test_annotations, split_csv=cfg.test_split_csv,
                        audio_rate=cfg.audio_rate)
    listed = full.ids + [i for i, _ in full.missing]
    val_ids = validation_split(listed, cfg.val_fraction, cfg.data_seed)
    parts = {}
    for name, keep in (("val", True), ("test", False)):
        indices = [k for k, i in enumerate(full.ids) if (i in val_ids) == keep]
        missing = [m for m in full.missing if (m[0] in val_ids) == keep]
        parts[name] = full.subset(indices, name=f"{cfg.testset} {name}", missing=missing)
        if len(parts[name]) == 0:
            raise FnacError(f"the {name} part of {cfg.testset} is empty ({len(missing)} of its ids are missing on disk)")
    return {"train": train, **parts}


def write_dataset_reports(datasets: dict[str, Any], out_dir: str | os.PathLike) -> None:
    """``missing_<split>.csv`` for every split with listed ids absent on disk (count printed to stderr)."""
    for name, ds in datasets.items():
        missing = getattr(ds, "missing", None)
        if missing:
            path = Path(out_dir) / f"missing_{name}.csv"
            write_rows(path, ["id", "reason"], missing)
            print(f"{name}: {len(missing)} listed ids are missing on disk (see {path})", file=sys.stderr)


def write_rows(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A csv file written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


# -- evaluation on a real test set ------------------------------------------------------------------------------

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

    def write(self, out_dir: str | os.PathLike, extra_scores: dict[str, Any] | None = None) -> None:
        """``scores.json``, ``per_sample.csv``, ``missing.csv``, ``skipped.csv`` and the kept maps (``maps.npz``,
        ``maps_ogl.npz``) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "scores.json", {"testset": self.testset, **self.scores, **(extra_scores or {})})
        columns = list(self.per_sample)
        rows = [[i, *(f"{self.per_sample[c][k]:.6f}" for c in columns[:1]), lab,
                 *(f"{self.per_sample[c][k]:.6f}" for c in columns[1:])] for k, (i, lab) in enumerate(zip(self.ids, self.labels))]
        write_rows(out / "per_sample.csv", ["id", columns[0], "class", *columns[1:]], rows)
        write_rows(out / "missing.csv", ["id", "reason"], self.missing)
        write_rows(out / "skipped.csv", ["id", "reason"], self.skipped)
        for name, maps in (("maps.npz", self.maps), ("maps_ogl.npz", self.ogl_maps)):
            if maps is not None:
                _atomic_savez(out / name, dict(zip(self.ids, maps)))


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
    out = metrics.summarize(torch.cat(columns["ciou" + suffix]))
    if "iou" + suffix in columns:
        out.update(metrics.summarize_segmentation(torch.cat(columns["iou" + suffix]), torch.cat(columns["f_score" + suffix])))
    return out


@torch.no_grad()
def evaluate_testset(model: torch.nn.Module, dataset: RealAVDataset, *, batch_size: int = 64,
                     device: torch.device | str = "cpu", num_workers: int = 0, skip_bad: bool = False,
                     keep_maps: bool = False, object_network: torch.nn.Module | None = None, seed: int = 0,
                     progress: bool = True) -> BenchmarkResult:
    """Localise and score every sample of a real test set, batched on ``device``.

    Batches group clips whose spectrograms share a width, so that native sample rates may differ. Scores: cIoU
    (AP50, mean, AUC) and, for masks, mIoU and F-score; beside them the centred Gaussian, random and oracle maps
    (``baselines``), and with ``object_network`` the OGL fused maps (``ogl``). An undecodable file raises
    :class:`FnacError` naming it, or with ``skip_bad`` is listed in ``result.skipped``.
    """
    from ..evaluate import centre_prior, oracle_maps  # here: evaluate may import the data package

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
        maps = model.localize(image, spec).float()
        scored = {"": maps}
        if object_network is not None:
            scored["_ogl"] = fuse_maps(maps, object_network(image))
        for suffix, m in scored.items():
            for k, v in _score_maps(m, gt, segmentation).items():
                columns.setdefault(k + suffix, []).append(v)
        b = maps.shape[0]
        trivial = {"centre_prior": prior.expand(b, -1, -1),
                   "random": torch.rand(b, MAP_SIZE, MAP_SIZE, generator=gen).to(device),
                   "oracle": oracle_maps(gt).to(device)}
        for name, m in trivial.items():
            for k, v in _score_maps(m, gt, segmentation).items():
                base[name].setdefault(k, []).append(v)
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
        ogl_maps=np.concatenate(kept_ogl)[restore] if keep_maps and object_network is not None else None)


def evaluate_checkpoint(checkpoint: str | os.PathLike, *, testset: str, data_root: str | os.PathLike,
                        annotations: str | os.PathLike, out: str | os.PathLike, split_csv: str | os.PathLike | None = None,
                        batch_size: int | None = None, device: str = "auto", num_workers: int = 0,
                        skip_bad: bool = False, save_maps: bool = False, ogl: bool = False,
                        ogl_weights: str | os.PathLike | None = None, audio_rate: int | None = None,
                        progress: bool = True) -> BenchmarkResult:
    """Evaluate a checkpoint on a real test set and write the result files into ``out``.

    ``audio_rate`` defaults to the rate the checkpoint was trained with (``None``: native rates).
    """
    from ..train import load_checkpoint
    from ..utils import resolve_device

    model, cfg, _ = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    rate = audio_rate if audio_rate is not None else getattr(cfg, "audio_rate", None)
    dataset = open_testset(testset, data_root, annotations, split_csv=split_csv, audio_rate=rate, skip_bad=skip_bad)
    object_network = None
    if ogl:
        from ..ogl import load_object_network

        object_network = load_object_network(ogl_weights).to(dev)
    out = Path(out)
    try:
        result = evaluate_testset(model.to(dev), dataset, batch_size=batch_size or cfg.eval_batch_size, device=dev,
                                  num_workers=num_workers, skip_bad=skip_bad, keep_maps=save_maps,
                                  object_network=object_network, seed=cfg.seed, progress=progress)
    except FnacError:
        out.mkdir(parents=True, exist_ok=True)
        write_rows(out / "missing.csv", ["id", "reason"], dataset.missing)
        raise
    result.write(out, extra_scores={"checkpoint": str(checkpoint), "audio_rate": rate})
    return result
