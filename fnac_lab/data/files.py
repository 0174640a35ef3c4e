"""Where a data root keeps its clips: ``ROOT/frames/ID.(jpg|jpeg|png)`` and ``ROOT/audio/ID.wav``, or both flat in
``ROOT`` (the layout of the public Flickr-SoundNet and VGG-Sound releases), and which listed ids it holds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..utils import FnacError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
AUDIO_EXTENSION = ".wav"


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
