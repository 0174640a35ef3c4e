"""One clip of the stamps benchmark (:mod:`fnac_lab.data.stamps_build`) drawn and written.

- **picture**: a background photograph (a random square crop of 60-100 % of its shorter side, a flip, brightness,
  contrast and saturation each scaled by 0.9-1.1), the clip's silent stamps (photographs without a recording of
  their own; longer side 15-35 % of the frame) and, on top, the sounding stamp (longer side 50-90 %: under the
  benchmarks' median threshold a map marks half the frame, so a smaller object caps cIoU below the 0.5 of AP50),
  each at a random position inside the frame and flipped half of the time. The ground truth is exact: the sounding stamp's
  alpha channel above one half, as a pixel mask and its bounding box;
- **sound**: the stamp's recording, mixed to mono, resampled (polyphase), scaled to a peak of -12 to -3 dB full
  scale and cut at a random offset, looped when shorter than the clip; with ``noise_snr_db``, pink (1/f) noise at
  that signal-to-noise ratio;
- **files**: an mp4 of the still picture (H.264) with the sound as its AAC track, written with PyAV, and the mask as
  a png, each written beside its place and renamed into it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from fractions import Fraction
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile
from PIL import Image, ImageEnhance

from ..utils import FnacError
from .stamps import Stamp, StampsSource

#: Splits: name -> (roles of the sounding stamps, role of the backgrounds).
SPLITS = {
    "train": (("train",), "train"),
    "val": (("train",), "eval"),
    "test_heard": (("train",), "eval"),
    "test_unseen_stamps": (("heldout_stamp",), "eval"),
    "test_unheard_classes": (("heldout_class",), "eval"),
}
#: The extended protocol's negatives, beside ``test_heard``: a test stamp's recording with the stamp out of view;
#: a picture with the stamp in view and near-silence (pink noise at -60 dB full scale); a picture without it and the
#: spoken description of a stamp (speech off screen).
NEGATIVE_KINDS = ("offscreen", "silent", "speech")
SILENCE_DBFS = -60.0
#: A recording shorter than this cannot be placed in a clip.
MIN_RECORDING_S = 0.01
FPS = 2


@dataclass(frozen=True)
class BuildSettings:
    """What defines a build: the same settings give the same files, bit for bit."""

    seed: int = 0
    n_train: int = 1000
    n_val: int = 100
    n_test: int = 200  # per test split; test_heard also gets as many negatives
    size: int = 224
    seconds: float = 3.0
    sample_rate: int = 16000
    max_distractors: int = 3
    noise_snr_db: float | None = None

    def __post_init__(self):
        for name in ("n_train", "n_val", "n_test", "size", "sample_rate"):
            if getattr(self, name) < 1:
                raise FnacError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.size < 64:
            raise FnacError(f"--size {self.size}: pictures need at least 64 px")
        if not 0.5 <= self.seconds <= 60:
            raise FnacError(f"--seconds {self.seconds}: a clip lasts 0.5 to 60 s")
        if self.max_distractors < 0:
            raise FnacError(f"--max-distractors {self.max_distractors}: must be 0 or more")

    def counts(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, **{s: self.n_test for s in SPLITS if s.startswith("test")},
                **{f"neg_{k}": len(range(i, self.n_test, len(NEGATIVE_KINDS))) for i, k in enumerate(NEGATIVE_KINDS)}}

    @classmethod
    def from_dict(cls, values: dict) -> "BuildSettings":
        return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Clip:
    """One clip of the plan: what :func:`render` draws."""

    id: str
    split: str  # a split of SPLITS, or neg_<kind>
    stamp: str  # the sounding (or, for negatives, heard) stamp
    label: str
    background: str
    distractors: tuple[str, ...]
    seed: tuple[int, ...]


# -- loading, cached per worker process ----------------------------------------------------------------------------

@lru_cache(maxsize=256)
def load_cutout(path: str) -> Image.Image:
    """A stamp's photograph as RGBA, trimmed to its object (the alpha channel's bounding box)."""
    with Image.open(path) as im:
        if "A" not in im.getbands() and "transparency" not in im.info:
            raise FnacError(f"{path}: no alpha channel (a stamp is a cut-out: its object is the alpha channel)")
        im = im.convert("RGBA")
    box = im.getchannel("A").point(lambda a: 255 if a > 127 else 0).getbbox()
    if box is None:
        raise FnacError(f"{path}: the alpha channel is empty (no object to place)")
    return im.crop(box)


@lru_cache(maxsize=32)
def load_background(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


@lru_cache(maxsize=256)
def load_recording(path: str, rate: int) -> np.ndarray:
    """A recording as mono float64 at ``rate`` Hz (polyphase resampling), peak-normalised to 1."""
    samples, native = soundfile.read(path, dtype="float64", always_2d=True)
    mono = samples.mean(axis=1)
    if len(mono) < MIN_RECORDING_S * native:
        raise FnacError(f"{path}: recording of {len(mono) / native * 1000:.1f} ms, under {MIN_RECORDING_S * 1000:.0f} "
                        f"ms: too short to place")
    g = gcd(rate, native)
    mono = scipy.signal.resample_poly(mono, rate // g, native // g)
    peak = np.abs(mono).max()
    if peak == 0:
        raise FnacError(f"{path}: the recording is silent")
    return mono / peak


# -- drawing -------------------------------------------------------------------------------------------------------

def _background(path: str, size: int, rng: np.random.Generator) -> Image.Image:
    im = load_background(path)
    side = int(min(im.size) * rng.uniform(0.6, 1.0))
    x, y = (int(rng.integers(0, im.size[i] - side + 1)) for i in (0, 1))
    im = im.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        im = enhance(im).enhance(rng.uniform(0.9, 1.1))
    return im


def _place(canvas: Image.Image, cutout: Image.Image, longer: float, rng: np.random.Generator) -> np.ndarray:
    """Pastes ``cutout`` with its longer side ``longer`` times the frame at a random position; returns its mask."""
    size = canvas.size[0]
    scale = longer * size / max(cutout.size)
    w, h = max(1, round(cutout.size[0] * scale)), max(1, round(cutout.size[1] * scale))
    im = cutout.resize((w, h), Image.BICUBIC)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    canvas.paste(im, (x, y), im)
    mask = np.zeros((size, size), dtype=bool)
    mask[y:y + h, x:x + w] = np.asarray(im.getchannel("A")) > 127
    return mask


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f power spectrum (amplitude 1/sqrt(f) in the frequency domain), unit RMS."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    spectrum /= np.sqrt(np.maximum(np.arange(n // 2 + 1), 1))
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / np.sqrt(np.mean(noise ** 2))


def _cut(recording: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of ``recording`` from a random offset, looped when it is shorter."""
    if len(recording) >= n:
        start = int(rng.integers(0, len(recording) - n + 1))
        return recording[start:start + n]
    return np.resize(np.roll(recording, -int(rng.integers(0, len(recording)))), n)


def render(clip: Clip, source: StampsSource, settings: BuildSettings
           ) -> tuple[Image.Image, np.ndarray | None, np.ndarray]:
    """The clip's picture, the sounding stamp's mask (``None`` when the stamp is out of view) and its audio
    (float32 in [-1, 1])."""
    rng = np.random.default_rng(clip.seed)
    canvas = _background(str(source.backgrounds / Path(clip.background).name), settings.size, rng)
    for name in clip.distractors:
        _place(canvas, load_cutout(str(source.stamps / f"{name}.png")), rng.uniform(0.15, 0.35), rng)
    in_view = clip.split != "neg_offscreen" and clip.split != "neg_speech"
    mask = _place(canvas, load_cutout(str(source.stamps / f"{clip.stamp}.png")), rng.uniform(0.5, 0.9),
                  rng) if in_view else None
    n = int(round(settings.seconds * settings.sample_rate))
    if clip.split == "neg_silent":
        audio = pink_noise(n, rng) * 10 ** (SILENCE_DBFS / 20)
    else:
        heard = (Stamp(clip.stamp, clip.label, "").description(source.stamps) if clip.split == "neg_speech"
                 else source.stamps / f"{clip.stamp}.ogg")
        audio = _cut(load_recording(str(heard), settings.sample_rate), n, rng) * 10 ** (rng.uniform(-12, -3) / 20)
        if settings.noise_snr_db is not None:
            rms = np.sqrt(np.mean(audio ** 2))
            audio = audio + pink_noise(n, rng) * rms * 10 ** (-settings.noise_snr_db / 20)
    return canvas.convert("RGB"), mask, np.clip(audio, -1, 1).astype(np.float32)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The end-exclusive pixel box ``(xmin, ymin, xmax, ymax)`` of a mask's pixels."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def write_video(path: Path, picture: Image.Image, audio: np.ndarray, settings: BuildSettings) -> None:
    """An mp4 of the still ``picture`` (H.264, :data:`FPS` frames a second) with ``audio`` as its AAC track, written
    next to ``path`` and renamed into place."""
    import av

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            # One encoder thread (the build runs a process per core) and FFmpeg's fast AAC coder: together about
            # twice as fast as the defaults on this size of clip.
            video = container.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "veryfast",
                                                                       "threads": "1"})
            video.width = video.height = settings.size
            video.pix_fmt = "yuv420p"
            sound = container.add_stream("aac", rate=settings.sample_rate, layout="mono",
                                         options={"aac_coder": "fast"})
            frame = av.VideoFrame.from_image(picture)
            for i in range(max(1, round(settings.seconds * FPS))):
                frame.pts, frame.time_base = i, Fraction(1, FPS)
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
            chunk = 1024
            for start in range(0, len(audio), chunk):
                block = av.AudioFrame.from_ndarray(audio[None, start:start + chunk], format="fltp", layout="mono")
                block.sample_rate, block.pts = settings.sample_rate, start
                container.mux(sound.encode(block))
            container.mux(sound.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_mask(path: Path, mask: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
