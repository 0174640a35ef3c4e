"""Video clips to the ``frames/`` + ``audio/`` layout: the middle frame as ``frames/ID.jpg`` and the audio track
as ``audio/ID.wav`` (16-bit PCM, native rate and channels unless a rate is asked for), ``ID`` being the file
name without its extension.

Decoding uses PyAV. Clips are processed in parallel processes with a progress bar. Each output is written to a
temporary file and renamed, audio first and frame last, so a clip counts as finished exactly when both files
exist: a rerun skips finished clips and redoes the others, and a killed run leaves no half-written file. Every
clip that fails is listed with its reason in ``ROOT/failed.csv`` (rewritten by each run).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile
from tqdm.auto import tqdm

from ..utils import FnacError, default_file_mode, output_folder, process_pool, write_rows

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp")
JPEG_QUALITY = 95


@dataclass
class PrepareReport:
    n_done: int
    n_existing: int
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, video path, reason)


def find_videos(videos: str | os.PathLike) -> dict[str, Path]:
    """Video files under ``videos`` (recursively) by id; two files with one id are refused."""
    root = Path(videos)
    if not root.is_dir():
        raise FnacError(f"{root}: video directory not found")
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            if path.stem in found:
                raise FnacError(f"two videos for id {path.stem!r}: {found[path.stem]} and {path}")
            found[path.stem] = path
    return found


def middle_frame(path: str | os.PathLike):
    """The frame shown at the middle of the video stream (the last frame with timestamp <= start + duration / 2),
    as a PIL image."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        tb = stream.time_base
        start = Fraction(stream.start_time or 0) * tb
        if stream.duration:
            duration = Fraction(stream.duration) * tb
        elif container.duration:
            duration = Fraction(container.duration, av.time_base)
        else:
            raise ValueError("the video stream has no duration")
        middle = start + duration / 2
        try:
            container.seek(int(middle / tb), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            pass  # not seekable: decode from the start
        chosen = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            if chosen is not None and Fraction(frame.pts) * tb > middle:
                break
            chosen = frame
        if chosen is None:
            raise ValueError("no decodable video frame")
        return chosen.to_image()


def audio_track(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """The first audio stream as float32 ``[T, channels]`` and its rate (resampled to ``sample_rate`` if given)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        rate = sample_rate or stream.rate
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=rate)
        chunks = []
        for frame in container.decode(stream):
            chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    if not chunks:
        raise ValueError("the audio stream holds no samples")
    return np.concatenate(chunks, axis=1).T, rate


def _write_atomically(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    os.chmod(tmp, default_file_mode())  # mkstemp creates 0600; writers keep the mode of the file they reopen
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def prepare_clip(job: tuple[str, str, str, int | None]) -> tuple[str, str, str | None]:
    """Write the frame and audio of one clip; ``(id, video, None)`` or ``(id, video, reason)`` on failure."""
    ident, video, out, sample_rate = job
    frame_path, audio_path = Path(out) / "frames" / f"{ident}.jpg", Path(out) / "audio" / f"{ident}.wav"
    try:
        samples, rate = audio_track(video, sample_rate)
        image = middle_frame(video).convert("RGB")
    except (av.FFmpegError, ValueError, OSError) as exc:
        return ident, video, f"{type(exc).__name__}: {exc}"
    _write_atomically(audio_path, lambda tmp: soundfile.write(tmp, np.clip(samples, -1.0, 1.0), rate,
                                                              subtype="PCM_16", format="WAV"))
    _write_atomically(frame_path, lambda tmp: image.save(tmp, format="JPEG", quality=JPEG_QUALITY))
    return ident, video, None


def _init_worker() -> None:
    av.logging.set_level(av.logging.ERROR)


def prepare_videos(videos: str | os.PathLike, out: str | os.PathLike, *, workers: int = 1,
                   sample_rate: int | None = None, progress: bool = True) -> PrepareReport:
    """Prepare every clip under ``videos`` into the data root ``out``; finished clips are skipped."""
    if sample_rate is not None and sample_rate < 1000:
        raise FnacError(f"--sample-rate {sample_rate}: must be at least 1000 Hz (leave it out for the native rate)")
    clips = find_videos(videos)
    out = output_folder(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    todo = [(i, str(p), str(out), sample_rate) for i, p in clips.items()
            if not ((out / "frames" / f"{i}.jpg").is_file() and (out / "audio" / f"{i}.wav").is_file())]
    failed: list[tuple[str, str, str]] = []
    pool = process_pool(workers, initializer=_init_worker)
    try:
        results = pool.imap_unordered(prepare_clip, todo) if pool else map(prepare_clip, todo)
        for ident, video, reason in tqdm(results, total=len(todo), desc="prepare", disable=not progress):
            if reason is not None:
                failed.append((ident, video, reason))
    finally:
        if pool:
            pool.terminate()
    failed.sort()
    write_rows(out / "failed.csv", ["id", "video", "reason"], failed)
    return PrepareReport(n_done=len(todo) - len(failed), n_existing=len(clips) - len(todo), failed=failed)
