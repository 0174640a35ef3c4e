"""Readers of the benchmarks' id lists, class labels and annotation files (formats of the public releases).

- id lists and split files: csv or txt, the first column the id, an optional second the class;
- ``vggsound.csv``: ``ytid,start,class,split`` (the id is ``ytid_start`` with the start zero-padded to 6 digits);
- Flickr-SoundNet ``ID.xml``: every ``bbox`` element (any depth) holds one leading non-coordinate child, then
  xmin, ymin, xmax, ymax in 256-px coordinates, read by position;
- ``vggss.json``: a list of ``{"file", "class", "bbox": [[x0, y0, x1, y1], ...]}`` with normalised coordinates;
- the extended test sets' negatives, ``flickr_test_plus_silent.csv`` / ``vggss_test_plus_silent.csv``:
  ``video,audio,label`` rows, every label ``non-sounding``.
"""

from __future__ import annotations

import csv
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from ..utils import FnacError
from .decode import FileDecodeError


def read_id_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(id, class)`` per row of a list file (csv or txt; first column the id, an optional second the class)."""
    path = Path(path)
    if not path.is_file():
        raise FnacError(f"{path}: id list not found")
    rows: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
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
    with open(path, newline="", encoding="utf-8-sig") as fh:
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
        entries = json.loads(path.read_text(encoding="utf-8-sig"))
        out = {}
        for e in entries:
            boxes = [list(map(float, b)) for b in e["bbox"]]
            if not boxes or any(len(b) != 4 for b in boxes):
                raise ValueError(f"entry {e['file']!r} needs boxes of four numbers")
            out[str(e["file"])] = (str(e.get("class", "")), boxes)
    except (ValueError, KeyError, TypeError) as exc:
        raise FnacError(f"{path}: not a VGG-SS annotation file ({exc})") from exc
    return out


#: Header and label of the negatives lists of the extended test sets (SLAVC, Mo and Morgado, NeurIPS 2022).
NEGATIVES_HEADER, NEGATIVE_LABEL = ("video", "audio", "label"), "non-sounding"


def read_negatives_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(video, audio)`` per row of an extended test set's negatives list (``flickr_test_plus_silent.csv``,
    ``vggss_test_plus_silent.csv``): csv rows ``video,audio,non-sounding`` after an optional ``video,audio,label``
    header; the frame of clip ``video`` is heard with the audio of clip ``audio``. A row of another shape or label, or
    a pair listed twice, is refused with its line."""
    path = Path(path)
    if not path.is_file():
        raise FnacError(f"{path}: negatives list not found")
    rows: list[tuple[str, str]] = []
    seen: dict[tuple[str, str], int] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or (line == 1 and tuple(c.lower() for c in cells) == NEGATIVES_HEADER):
                continue
            if len(cells) != 3 or not cells[0] or not cells[1]:
                raise FnacError(f"{path}:{line}: expected video,audio,{NEGATIVE_LABEL}, got {row!r}")
            if cells[2] != NEGATIVE_LABEL:
                raise FnacError(f"{path}:{line}: label {cells[2]!r} is not {NEGATIVE_LABEL!r} (the list holds negatives "
                                f"only)")
            pair = (cells[0], cells[1])
            if pair in seen:
                raise FnacError(f"{path}:{line}: the pair {pair[0]},{pair[1]} repeats line {seen[pair]}")
            seen[pair] = line
            rows.append(pair)
    if not rows:
        raise FnacError(f"{path}: negatives list is empty")
    return rows
