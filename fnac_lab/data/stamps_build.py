"""The stamps benchmark: clips of real photographs and recordings (:mod:`fnac_lab.data.stamps_render`) planned
from the class table (:mod:`fnac_lab.data.stamps`) and written in the public benchmarks' layouts, so that the
real-data path reads them as it reads VGG-SS or Flickr-SoundNet.

Splits (:data:`~fnac_lab.data.stamps_render.SPLITS`): ``train``; ``val`` and ``test_heard`` (training stamps in new
pictures over the held-out backgrounds, with new cuts of their sounds); ``test_unseen_stamps`` (held-out stamps of
seen classes); ``test_unheard_classes`` (classes never seen). Each clip draws a class uniformly, then one of its
stamps. The extended protocol's negatives (``neg_offscreen``, ``neg_silent``, ``neg_speech``) go with
``test_heard``.

Written under ``ROOT``:

- ``videos/ID.mp4``: ``fnac-lab prepare --videos ROOT/videos --out ROOT`` turns them into ``frames/`` + ``audio/``;
- ``SPLIT.csv`` (``id,class`` rows without a header, as the benchmarks' split files), for ``train_ids`` /
  ``train_labels`` and ``--split-csv``;
- ``vggss.json`` (normalised boxes), ``flickr/ID.xml`` (256-px boxes, each written as two agreeing annotators so
  that Flickr's consensus map is 1 on the object) and ``masks/ID.png`` (AVSBench-style), for the val and test clips.
  Box coordinates are pixel centres (``(x + 0.5) / size``), so that the readers' truncation to 224 px gives back
  the pixel box exactly at ``size`` 224;
- ``vggss_test_plus_silent.csv`` and ``flickr_test_plus_silent.csv``: the negatives as distributed;
- ``clips.csv``: what each clip holds; ``build.json``: the settings, the tables' hashes and the packages;
  ``skipped.csv``: with ``skip_bad``, the stamps left out as unreadable.

A clip is finished exactly when its video exists (its mask is written first, each file renamed into place): a
rerun with the same settings skips finished clips, one with other settings is refused, and the annotation files are
rewritten whole at the end of every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..utils import FnacError, atomic_write_text, process_pool, write_rows
from .catalogue import STAMPS_LAYOUT
from .stamps import Stamp, StampsSource, TABLES, missing_files, read_backgrounds, read_class_table
from .stamps_render import (NEGATIVE_KINDS, SPLITS, BuildSettings, Clip, load_background, load_cutout, load_recording,
                            mask_box, render, write_mask, write_video)

#: A silent stamp's longer side must be at least this many pixels to be drawn as a distractor.
MIN_CUTOUT_PX = 100


def silent_stamps(source: StampsSource, stamps: list[Stamp]) -> list[str]:
    """The distractors: photographs without a recording of their own, with transparency and a longer side of at
    least :data:`MIN_CUTOUT_PX`, outside ``symbols/`` and outside the folders of the sounding stamps (a silent
    picture of a sounding class, a second cow, would make the sounding object ambiguous)."""
    sounding_folders = {Path(s.name).parent.as_posix() for s in stamps}
    found = []
    for png in sorted(source.stamps.rglob("*.png")):
        name = png.relative_to(source.stamps).with_suffix("").as_posix()
        if (name.startswith("symbols/") or png.with_suffix(".ogg").exists()
                or Path(name).parent.as_posix() in sounding_folders):
            continue
        with Image.open(png) as im:
            if max(im.size) >= MIN_CUTOUT_PX and ("A" in im.getbands() or "transparency" in im.info):
                found.append(name)
    return found


def plan(stamps: list[Stamp], backgrounds: dict[str, list[str]], silent: list[str], source: StampsSource,
         settings: BuildSettings) -> list[Clip]:
    """Every clip of the build, drawn from ``settings.seed`` alone (one random stream per split)."""
    clips = []
    counts = settings.counts()
    kinds = list(SPLITS) + [f"neg_{k}" for k in NEGATIVE_KINDS]
    for index, split in enumerate(kinds):
        roles, bg_role = SPLITS.get(split, SPLITS["test_heard"])
        pool = [s for s in stamps if s.role in roles and (split != "neg_speech" or s.description(source.stamps))]
        classes = sorted({s.label for s in pool})
        if not classes:
            raise FnacError(f"split {split}: no stamp of role {', '.join(roles)} is left")
        rng = np.random.default_rng([settings.seed, index])
        for i in range(counts[split]):
            label = classes[int(rng.integers(len(classes)))]
            members = [s for s in pool if s.label == label]
            stamp = members[int(rng.integers(len(members)))]
            n_distractors = int(rng.integers(0, settings.max_distractors + 1))
            distractors = tuple(silent[int(j)] for j in rng.choice(len(silent), n_distractors, replace=False))
            clips.append(Clip(id=f"{split}_{i:06d}", split=split, stamp=stamp.name, label=label,
                              background=backgrounds[bg_role][int(rng.integers(len(backgrounds[bg_role])))],
                              distractors=distractors, seed=(settings.seed, index, i)))
    return clips


def _clip_job(job: tuple[Clip, StampsSource, BuildSettings, str]) -> tuple[str, tuple[int, int, int, int] | None]:
    """Draws one clip and writes its mask (val and test clips) and video unless the video exists; returns its box."""
    clip, source, settings, root = job
    picture, mask, audio = render(clip, source, settings)
    video = Path(root) / "videos" / f"{clip.id}.mp4"
    box = mask_box(mask) if mask is not None else None
    if not video.exists():
        if mask is not None and clip.split in SPLITS and clip.split != "train":
            write_mask(Path(root) / "masks" / f"{clip.id}.png", mask)
        write_video(video, picture, audio, settings)
    return clip.id, box


def _tables_digest() -> str:
    digest = hashlib.sha256()
    for name in ("classes.csv", "excluded.csv", "backgrounds.csv"):
        digest.update((TABLES / name).read_bytes())
    return digest.hexdigest()


def _usable_stamps(stamps: list[Stamp], source: StampsSource, settings: BuildSettings, skip_bad: bool
                   ) -> tuple[list[Stamp], list[tuple[str, str]]]:
    """The stamps whose photograph and recording are there and can be read; another is refused in one line, or
    with ``skip_bad`` listed and left out."""
    usable, skipped = [], []
    for stamp in stamps:
        absent = [str(stamp.file(source.stamps, kind)) for kind in ("picture", "recording")
                  if not stamp.file(source.stamps, kind).is_file()]
        try:
            if absent:
                raise FnacError(f"{absent[0]}: not in the source")
            load_cutout(str(stamp.file(source.stamps, "picture")))
            load_recording(str(stamp.file(source.stamps, "recording")), settings.sample_rate)
        except FnacError as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - PIL and libsndfile raise many kinds for a corrupt file
            reason = f"{stamp.name}: cannot be read ({type(exc).__name__}: {exc})"
        else:
            usable.append(stamp)
            continue
        if not skip_bad:
            raise FnacError(f"{reason} (--skip-bad leaves such stamps out, listed in skipped.csv)")
        skipped.append((stamp.name, reason))
    return usable, skipped


def build(source: StampsSource, out: str | os.PathLike, settings: BuildSettings, *, workers: int = 1,
          skip_bad: bool = False, progress: bool = True) -> dict[str, int]:
    """Builds (or resumes) the benchmark into ``out``; returns the number of clips per split."""
    root = Path(out)
    missing = missing_files(source, [], read_backgrounds()) + ([] if skip_bad else
                                                                missing_files(source, read_class_table(), []))
    if missing:
        raise FnacError(f"{len(missing)} files of the class table are missing from the source, the first: {missing[0]}"
                        + ("" if skip_bad else " (--skip-bad leaves such stamps out, listed in skipped.csv)"))
    stamps, skipped = _usable_stamps(read_class_table(), source, settings, skip_bad)
    packages = source.stamps.parent.parent.parent.parent / "packages.txt"
    identity = {"settings": asdict(settings), "tables_sha256": _tables_digest(), "skipped": [list(s) for s in skipped],
                "packages": packages.read_text().splitlines() if packages.is_file() else "given with --source"}
    manifest = root / "build.json"
    if manifest.is_file():
        if json.loads(manifest.read_text()) != identity:
            raise FnacError(f"{root}: holds a build with other settings or tables ({manifest}); build into a new --out")
    elif root.exists() and any(root.iterdir()):
        raise FnacError(f"{root}: not empty and not a stamps build; build into a new --out")
    backgrounds: dict[str, list[str]] = {"train": [], "eval": []}
    for b in read_backgrounds():
        if b.role != "excluded":
            load_background(str(source.backgrounds / Path(b.path).name))
            backgrounds[b.role].append(b.path)
    clips = plan(stamps, backgrounds, silent_stamps(source, read_class_table()), source, settings)
    for folder in ("videos", "masks", "flickr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for stale in (root / folder).glob(".*.tmp"):  # left by a killed run
            stale.unlink()
    atomic_write_text(manifest, json.dumps(identity, indent=2, sort_keys=True) + "\n")
    jobs = [(clip, source, settings, str(root)) for clip in clips]
    pool = process_pool(workers)
    boxes: dict[str, tuple[int, int, int, int] | None] = {}
    try:
        results = pool.imap_unordered(_clip_job, jobs, chunksize=8) if pool else map(_clip_job, jobs)
        for ident, box in tqdm(results, total=len(jobs), desc="stamps clips", unit="clip", disable=not progress):
            boxes[ident] = box
    finally:
        if pool:
            pool.terminate()
            pool.join()
    write_annotations(root, clips, boxes, settings)
    write_rows(root / "skipped.csv", ["stamp", "reason"], skipped)
    return {split: sum(c.split == split for c in clips) for split in dict.fromkeys(c.split for c in clips)}


def _flickr_xml(box: tuple[int, int, int, int], size: int, label: str) -> str:
    annotation = ET.Element("annotation")
    for _ in range(2):  # two annotators in agreement: Flickr's consensus map is 1 on the object
        bbox = ET.SubElement(annotation, "bbox")
        ET.SubElement(bbox, "label").text = label
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bbox, tag).text = f"{(value + 0.5) * 256 / size:.6f}"
    return ET.tostring(annotation, encoding="unicode") + "\n"


def write_annotations(root: Path, clips: list[Clip], boxes: dict, settings: BuildSettings) -> None:
    """The split lists, the three annotation formats, the negatives lists and ``clips.csv``."""
    for split in SPLITS:  # no header, as the benchmarks' split files
        atomic_write_text(root / f"{split}.csv", "".join(f"{c.id},{c.label}\n" for c in clips if c.split == split))
    annotated = [c for c in clips if c.split in SPLITS and c.split != "train"]
    entries = [{"file": c.id, "class": c.label, "bbox": [[(v + 0.5) / settings.size for v in boxes[c.id]]]}
               for c in annotated]
    atomic_write_text(root / STAMPS_LAYOUT["test_annotations"], json.dumps(entries))
    for c in annotated:
        atomic_write_text(root / "flickr" / f"{c.id}.xml", _flickr_xml(boxes[c.id], settings.size, c.label))
    negatives = [(c.id, c.id, "non-sounding") for c in clips if c.split.startswith("neg_")]
    for name in ("vggss_test_plus_silent.csv", "flickr_test_plus_silent.csv"):
        write_rows(root / name, ["video", "audio", "label"], negatives)
    write_rows(root / "clips.csv", ["id", "split", "stamp", "class", "background", "distractors", "box"],
               [(c.id, c.split, c.stamp, c.label, c.background, " ".join(c.distractors),
                 " ".join(map(str, boxes[c.id])) if boxes[c.id] else "") for c in clips])
