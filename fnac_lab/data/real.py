"""Datasets of the real benchmarks: Flickr-SoundNet, VGG-Sound / VGG-SS (heard, unheard) and AVSBench-S4.

Training sets are a data root (:mod:`fnac_lab.data.files`) filtered by an id list
(:data:`fnac_lab.data.catalogue.TRAINSETS`); test sets add their annotations
(:data:`~fnac_lab.data.catalogue.TESTSETS`, readers in :mod:`fnac_lab.data.annotations`):

- ``flickr``: the annotator consensus ``clip(sum(boxes) / 2, max=1)`` after ``int(224 * v / 256)``;
- ``vggss``, ``vggss_heard``, ``vggss_unheard``: the binary union of the boxes, mapped with ``int(clip(v, 0, 1) * 224)``;
- ``avsbench_s4``: one binary mask per frame, ``ANNOTATIONS/ID.png`` (pixels > 0 are the sounding object),
  resized to 224 x 224 (nearest) when needed;
- ``flickr_extended``, ``vggss_extended`` (SLAVC, Mo and Morgado, NeurIPS 2022): the annotated ``flickr`` / ``vggss``
  clips read as those, and their negatives (:func:`open_negatives`) from the list as distributed.

Class names become integer codes in one place, :func:`class_codes`. :class:`LabelledSplit` shows a real dataset
through the built-in data's ``batch(indices)`` contract (integer labels, the class names beside) for the analysis
notebooks; the datasets themselves keep no ``batch`` method, which training and scoring take for the mark of
in-memory data (they read real data through their loaders).

Ids come from a split file (first column; a second column, when present, is the class) or, without one, from the
annotations. Listed ids whose frame, audio or annotation is absent are kept in ``dataset.missing`` with the
reason; nothing is dropped silently. Samples are decoded as :mod:`fnac_lab.data.decode` says; SpecAugment is
applied by the training loop on the batch (or per item with ``audio_augment=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import default_collate

from .. import metrics
from ..audio import AudioDecodeError, normalise_spectrogram
from ..metrics import MAP_SIZE
from ..utils import FnacError
from .annotations import (NEGATIVE_LABEL, read_flickr_boxes, read_id_list, read_labels, read_negatives_list,
                          read_vggss_annotations)
from .catalogue import TESTSETS, TRAINSETS
from .contracts import whole_batch
from .decode import (DECODE_ERRORS, FileDecodeError, TRAIN_AUGMENT, audio_sample_rate, clip_spectrogram, mask_bands,
                     read_image, read_mask, resize_for_testing, resize_for_training, spectrogram_frames)
from .files import Layout, Sample, resolve_samples


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
        #: the class name of every sample, or None when one has none
        self.label_names = [s.label for s in self.samples] if self.has_labels else None
        if self.has_labels and split == "train":
            self.labels = class_codes(self.label_names)[0]  # for the class-biased sampler

    def __len__(self) -> int:
        return len(self.samples)

    def _ground_truth(self, s: Sample) -> torch.Tensor:
        if self.gt == "mask":
            return read_mask(s.target)
        return metrics.gt_map(s.target, MAP_SIZE, mode=self.gt).to(torch.float32)

    def ground_truth(self, index: int) -> torch.Tensor:
        """The ground-truth map ``[224, 224]`` of sample ``index`` (from its annotation alone, no frame decoded)."""
        if not self.gt:
            raise FnacError(f"{self.name or 'this dataset'}: has no ground truth (a training set)")
        return self._ground_truth(self.samples[index])

    def for_testing(self) -> "RealAVDataset":
        """The same samples read as a test set reads them: the 224 x 224 test resize, no augmentation."""
        if self.split == "test" and not self.audio_augment:
            return self
        return RealAVDataset(self.samples, split="test", gt=self.gt, audio_rate=self.audio_rate, name=self.name,
                             missing=self.missing, skipped=self.skipped)

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


def class_codes(names: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """``(codes, classes)``: ``classes`` the distinct ``names`` sorted, ``codes`` int64 ``[N]`` the position of each
    name in it. The one mapping of class names to the integer labels that samplers, same-class masks and legends
    use (``classes[code]`` names a code)."""
    classes = sorted(set(names))
    position = {c: k for k, c in enumerate(classes)}
    return torch.tensor([position[c] for c in names], dtype=torch.long), classes


class LabelledSplit(torch.utils.data.Dataset):
    """A real dataset (:class:`RealAVDataset`, or a :class:`~fnac_lab.data.cache.CachedAVDataset` with labels) seen
    through the built-in data's batch contract, for analysis.

    ``batch(indices)`` decodes the samples in the order given and stacks them: ``image`` uint8 ``[B, 3, 224, 224]``
    (the real frame), ``spec`` float32 ``[B, 1, 257, F]``, ``label`` int64 ``[B]`` (codes of :func:`class_codes`),
    ``id`` and, for a test set, ``gt`` float32 ``[B, 224, 224]``. ``labels`` holds every sample's code,
    ``class_names`` the names the codes stand for (``class_name(code)``). A training set is read as a test set
    reads it (no random crop, flip or SpecAugment), so a batch is the same every time. There are no distractor
    boxes: real frames annotate the sounding object alone.
    """

    def __init__(self, dataset, *, name: str = ""):
        self.dataset = dataset.for_testing()
        self.name = name or getattr(dataset, "name", "") or "real data"
        names = getattr(self.dataset, "label_names", None)
        if not names:
            raise FnacError(f"{self.name}: its clips have no class labels, which the analysis needs (give them in "
                            f"the split file's second column, or train_labels=PATH for a training set)")
        self.labels, self.class_names = class_codes(names)
        self.ids = list(self.dataset.ids)
        self.missing = list(getattr(self.dataset, "missing", []))
        self.has_ground_truth = bool(getattr(self.dataset, "gt", None))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.batch([index], squeeze=True)

    def batch(self, indices, squeeze: bool = False) -> dict[str, Any]:
        """The samples at ``indices`` stacked into one batch dict (a file that cannot be decoded raises
        :class:`FnacError` naming it)."""
        rows = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
        stacked = whole_batch(self.dataset, rows)
        out = {"image": stacked["image"], "spec": stacked["spec"], "label": self.labels[rows],
               "id": [self.ids[i] for i in rows]}
        if "gt" in stacked:
            out["gt"] = stacked["gt"]
        if squeeze:
            out = {k: v[0] for k, v in out.items()}
        return out

    def class_name(self, code: int) -> str:
        return self.class_names[code]

    def gt_maps(self, indices, size: int = MAP_SIZE) -> torch.Tensor:
        """Ground-truth maps ``[B, 224, 224]`` of ``indices`` from the annotations (no frame decoded)."""
        if not self.has_ground_truth:
            raise FnacError(f"{self.name}: has no ground truth to localise against (a training set); use its "
                            f"test or val split")
        if size != MAP_SIZE:
            raise ValueError(f"real ground truth is {MAP_SIZE} x {MAP_SIZE}, not {size}")
        rows = [int(i) for i in indices]
        if not rows:
            return torch.zeros(0, MAP_SIZE, MAP_SIZE)
        return torch.stack([self.dataset.ground_truth(i) for i in rows])


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
    An unreadable annotation raises, or with ``skip_bad`` lands in ``dataset.skipped``. A sample whose boxes
    all lie outside the image, or are inverted, has no ground truth to score: it always lands in
    ``dataset.skipped`` with the reason (boxes partly outside keep their inside part).
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
    for ident, _ in rows:
        boxes = targets.get(ident) if kind != "mask" else None
        if boxes is not None and all(metrics.box_is_empty(b, MAP_SIZE) for b in boxes):
            # an annotation fault, not the model's: never scored (it would count as cIoU 0), always listed
            skipped.append((ident, f"ground truth empty once clipped to the image (pixel boxes {boxes})"))
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


def negative_id(video: str, audio: str) -> str:
    """The id of a negative: the clip's own when frame and audio come from one clip, else ``VIDEO+AUDIO``."""
    return video if video == audio else f"{video}+{audio}"


def open_negatives(root: str | os.PathLike, negatives: str | os.PathLike, *, audio_rate: int | None = None,
                   name: str = "negatives") -> RealAVDataset:
    """The negatives of an extended test set: for every ``video,audio`` row of the list ``negatives``
    (:func:`~fnac_lab.data.annotations.read_negatives_list`) the frame of clip ``video`` and the audio of clip
    ``audio`` from the layout at ``root``, without ground truth, labelled ``non-sounding``, with the id of
    :func:`negative_id`. Rows whose frame or audio is absent land in ``dataset.missing`` with the reason."""
    layout = Layout.find(root)
    frames, audio = layout.index()
    samples, missing = [], []
    for video, clip in read_negatives_list(negatives):
        ident = negative_id(video, clip)
        reasons = ([f"no frame {video} in {layout.frames}"] if video not in frames else []) + \
                  ([f"no audio {clip} in {layout.audio}"] if clip not in audio else [])
        if reasons:
            missing.append((ident, "; ".join(reasons)))
        else:
            samples.append(Sample(ident, frames[video], audio[clip], NEGATIVE_LABEL))
    return RealAVDataset(samples, split="test", audio_rate=audio_rate, name=name, missing=missing)
