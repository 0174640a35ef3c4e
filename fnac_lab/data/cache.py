"""A pre-decoded, memory-mappable copy of a data root, so that loading a sample costs a few memory reads.

``fnac-lab cache --data-root ROOT [--ids LIST] --out CACHE`` writes (into a temporary sibling directory that is
renamed into place once complete, so a killed run leaves no half cache)::

    CACHE/meta.json               format version, count, spectrogram shape, audio rate, source root
    CACHE/ids.txt                 one id per line, in the order of the arrays
    CACHE/train_frames.u8         each frame resized to shorter side 246 (bicubic), whole, uint8 [3, h, w], back to back
    CACHE/train_frames_index.npy  int64 [N, 3]: byte offset, h, w of each frame in train_frames.u8
    CACHE/test_frames.u8          uint8 [N, 3, 224, 224]: the 224 x 224 test resize
    CACHE/specs.f16               float16 [N, 257, F]: the published log-spectrogram of the centre 3 s (before / 12)
    CACHE/missing.csv             listed ids absent on disk, with the reason
    CACHE/skipped.csv             files that could not be decoded (with --skip-bad), with the reason

The whole resized frame is kept (not a centre square), so the random 224 crops of training follow exactly the
published distribution. All clips of a cache share one spectrogram width, hence one sample rate: mixed rates are
refused unless ``--audio-rate`` resamples them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio import normalise_spectrogram
from ..utils import FnacError, atomic_write_text, describe, process_pool, write_json, write_rows
from .annotations import read_id_list
from .decode import (CROP, DECODE_ERRORS, TRAIN_AUGMENT, clip_spectrogram, mask_bands, read_image, resize_for_testing,
                     resize_for_training)
from .files import Layout, resolve_samples
from .real import class_codes

CACHE_VERSION = 2  #: 2: meta.json records the array files' sizes and a checksum of the index


@dataclass
class CacheReport:
    out: Path
    n_cached: int
    missing: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _init_worker() -> None:
    torch.set_num_threads(1)


def _decode(job: tuple[str, str, str, int | None]) -> tuple[Any, ...]:
    """One sample: ``("ok", id, train frame, test frame, float16 log-spectrogram)`` or ``("error", id, reason)``."""
    ident, frame, audio, audio_rate = job
    try:
        image = read_image(frame)
        spec = clip_spectrogram(audio, audio_rate)
    except DECODE_ERRORS as exc:
        return ("error", ident, str(exc))
    return ("ok", ident, resize_for_training(image).numpy(), resize_for_testing(image).numpy(),
            spec.numpy().astype(np.float16))


def build_cache(data_root: str | os.PathLike, out: str | os.PathLike, *, ids: str | os.PathLike | None = None,
                workers: int = 1, skip_bad: bool = False, audio_rate: int | None = None,
                progress: bool = True) -> CacheReport:
    """Decode the clips of ``data_root`` (all, or those listed in ``ids``) into a cache at ``out``.

    An undecodable file raises :class:`FnacError` naming it, or with ``skip_bad`` is left out and listed in
    ``skipped.csv``; listed ids absent on disk are listed in ``missing.csv``. ``workers > 1`` decodes in that many
    processes.
    """
    out = Path(out)
    if (out / "meta.json").exists():
        raise FnacError(f"{out}: already holds a cache; remove it or choose another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FnacError(f"{out}: exists and is not an empty directory")
    layout = Layout.find(data_root)
    if ids is not None:
        rows = read_id_list(ids)
    else:
        frames, audio = layout.index()
        rows = [(i, "") for i in sorted(set(frames) | set(audio))]
    samples, missing = resolve_samples(layout, rows)
    if not samples:
        raise FnacError(f"{data_root}: none of the {len(rows)} listed clips is on disk")
    broken = next((s.id for s in samples if "\n" in s.id or "\r" in s.id), None)
    if broken is not None:
        raise FnacError(f"{data_root}: id {broken!r} holds a line break, which ids.txt (one id per line) cannot keep; "
                        f"rename its files")
    jobs = [(s.id, str(s.frame), str(s.audio), audio_rate) for s in samples]
    audio_of = {s.id: s.audio for s in samples}
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        pool = process_pool(workers, initializer=_init_worker)
        try:
            results = pool.imap(_decode, jobs, chunksize=4) if pool else map(_decode, jobs)
            cached, skipped, spec_shape, index = [], [], None, []
            with open(tmp / "train_frames.u8", "wb") as f_train, open(tmp / "test_frames.u8", "wb") as f_test, \
                    open(tmp / "specs.f16", "wb") as f_spec:
                for result in tqdm(results, total=len(jobs), desc="cache", disable=not progress):
                    if result[0] == "error":
                        if not skip_bad:
                            raise FnacError(result[2])
                        skipped.append((result[1], result[2]))
                        continue
                    _, ident, train_frame, test_frame, spec = result
                    if spec_shape is None:
                        spec_shape = spec.shape
                    elif spec.shape != spec_shape:
                        raise FnacError(f"{audio_of[ident]}: spectrogram of {spec.shape[1]} frames where the cache holds "
                                        f"{spec_shape[1]} (another sample rate); pass --audio-rate to resample all clips")
                    index.append((f_train.tell(), train_frame.shape[1], train_frame.shape[2]))
                    f_train.write(np.ascontiguousarray(train_frame).tobytes())
                    f_test.write(np.ascontiguousarray(test_frame).tobytes())
                    f_spec.write(np.ascontiguousarray(spec).tobytes())
                    cached.append(ident)
        finally:
            if pool:
                pool.terminate()
        if not cached:
            raise FnacError(f"{data_root}: no clip could be decoded ({len(skipped)} skipped)")
        np.save(tmp / "train_frames_index.npy", np.array(index, dtype=np.int64))
        atomic_write_text(tmp / "ids.txt", "".join(i + "\n" for i in cached))
        write_rows(tmp / "missing.csv", ["id", "reason"], missing)
        write_rows(tmp / "skipped.csv", ["id", "reason"], skipped)
        write_json(tmp / "meta.json", {"version": CACHE_VERSION, "n": len(cached), "spec_shape": list(spec_shape),
                                       "audio_rate": audio_rate, "source": str(Path(data_root).resolve()),
                                       "sizes": {name: (tmp / name).stat().st_size for name in ARRAY_FILES},
                                       "sha256": {name: _sha256(tmp / name) for name in INDEX_FILES}})
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CacheReport(out=out, n_cached=len(cached), missing=missing, skipped=skipped)


#: The array files of a cache, whose sizes meta.json records, and the small index files it checksums.
ARRAY_FILES = ("train_frames.u8", "test_frames.u8", "specs.f16", "train_frames_index.npy")
INDEX_FILES = ("train_frames_index.npy", "ids.txt")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_cache(root: Path, meta: dict[str, Any]) -> None:
    """Every file that ``meta`` names exists with the size it implies and the index files match their checksums;
    otherwise one :class:`FnacError` naming the file, what was expected and what is there."""
    for name in (*ARRAY_FILES, "ids.txt", "missing.csv", "skipped.csv"):
        if not (root / name).is_file():
            raise FnacError(f"{root / name}: missing from the cache; rebuild it with `fnac-lab cache`")
    n, shape = meta["n"], meta["spec_shape"]
    implied = {"test_frames.u8": n * 3 * CROP * CROP, "specs.f16": n * int(np.prod(shape)) * 2}
    for name in ARRAY_FILES:
        expected, actual = implied.get(name, meta["sizes"][name]), (root / name).stat().st_size
        if actual != expected or actual != meta["sizes"][name]:
            raise FnacError(f"{root / name}: {actual} bytes where the cache's meta.json implies {expected}; "
                            f"the cache is damaged, rebuild it with `fnac-lab cache`")
    for name in INDEX_FILES:
        if _sha256(root / name) != meta["sha256"][name]:
            raise FnacError(f"{root / name}: checksum differs from the one written with the cache; the cache is "
                            f"damaged, rebuild it with `fnac-lab cache`")
    index = np.load(root / "train_frames_index.npy")
    frames = int((3 * index[:, 1] * index[:, 2]).sum()) if len(index) else 0
    if index.shape != (n, 3) or frames != meta["sizes"]["train_frames.u8"]:
        raise FnacError(f"{root / 'train_frames_index.npy'}: indexes {frames} frame bytes of {len(index)} clips where "
                        f"meta.json names {meta['sizes']['train_frames.u8']} bytes of {n}; rebuild the cache")


def _read_rows(path: Path) -> list[tuple[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [(r[0], r[1]) for r in list(csv.reader(fh))[1:]]


class CachedAVDataset(torch.utils.data.Dataset):
    """Samples of a cache written by :func:`build_cache`.

    Items: ``image`` uint8 ``[3, 224, 224]`` (ImageNet normalisation happens on the batch, on the device),
    ``spec`` float32 ``[1, 257, F]`` (the published log-spectrogram / 12) and ``id``; with labels, ``label``.
    ``split="train"`` applies the published random 224 crop and horizontal flip and, by default, one
    SpecAugment frequency and time mask; ``split="test"`` returns the 224 x 224 test resize and no augmentation.
    Set ``audio_augment=False`` when the training loop masks the batch itself.
    """

    def __init__(self, cache_dir: str | os.PathLike, split: str = "train", *, audio_augment: bool | None = None):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.root = Path(cache_dir)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FnacError(f"{self.root}: not a cache (no meta.json; write one with `fnac-lab cache`)")
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FnacError(f"{meta_path}: unreadable ({describe(exc)}); rebuild the cache with `fnac-lab cache`") from None
        if not isinstance(self.meta, dict) or self.meta.get("version") != CACHE_VERSION:
            version = self.meta.get("version") if isinstance(self.meta, dict) else None
            raise FnacError(f"{self.root}: cache format {version} is not {CACHE_VERSION}; rebuild it")
        check_cache(self.root, self.meta)
        # one id per "\n"-ended line; not splitlines(), which also splits at U+2028, U+0085 and others an id may hold
        self.ids = (self.root / "ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
        if len(self.ids) != self.meta["n"]:
            raise FnacError(f"{self.root}: ids.txt lists {len(self.ids)} ids, meta.json {self.meta['n']}")
        self.split = split
        self.audio_augment = split == "train" if audio_augment is None else audio_augment
        self.missing = _read_rows(self.root / "missing.csv")
        self.skipped = _read_rows(self.root / "skipped.csv")
        self.label_names: list[str] | None = None
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def _open(self) -> dict[str, np.ndarray]:
        # Opened lazily, so that each loader worker maps the files itself.
        if self._arrays is None:
            n, shape = len(self.ids), tuple(self.meta["spec_shape"])
            arrays = {"specs": np.memmap(self.root / "specs.f16", dtype=np.float16, mode="r", shape=(n, *shape))}
            if self.split == "train":
                arrays["frames"] = np.memmap(self.root / "train_frames.u8", dtype=np.uint8, mode="r")
                arrays["index"] = np.load(self.root / "train_frames_index.npy")
            else:
                arrays["frames"] = np.memmap(self.root / "test_frames.u8", dtype=np.uint8, mode="r",
                                             shape=(n, 3, CROP, CROP))
            self._arrays = arrays
        return self._arrays

    def set_labels(self, by_id: dict[str, str], source: str | os.PathLike = "labels") -> None:
        """Attach a class per id (``label`` in items, ``labels`` for the class-biased sampler)."""
        unlabelled = [i for i in self.ids if i not in by_id]
        if unlabelled:
            raise FnacError(f"{source}: {len(unlabelled)} cached ids have no class (first: {unlabelled[0]!r})")
        self.label_names = [by_id[i] for i in self.ids]
        self.labels = class_codes(self.label_names)[0]

    def for_testing(self) -> "CachedAVDataset":
        """The same clips read as a test set reads them (the stored 224 x 224 test resize, no augmentation), with
        the same labels."""
        if self.split == "test" and not self.audio_augment:
            return self
        out = CachedAVDataset(self.root, split="test", audio_augment=False)
        if self.label_names is not None:
            out.label_names, out.labels = list(self.label_names), self.labels.clone()
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        arrays = self._open()
        spec = normalise_spectrogram(torch.from_numpy(np.array(arrays["specs"][index])).float())[None]
        if self.split == "train":
            offset, h, w = (int(v) for v in arrays["index"][index])
            frame = torch.from_numpy(np.array(arrays["frames"][offset : offset + 3 * h * w]).reshape(3, h, w))
            image = TRAIN_AUGMENT(frame)
        else:
            image = torch.from_numpy(np.array(arrays["frames"][index]))
        if self.audio_augment:
            spec = mask_bands(spec)
        item = {"image": image, "spec": spec, "id": self.ids[index]}
        if self.label_names is not None:
            item["label"] = self.label_names[index]
        return item
