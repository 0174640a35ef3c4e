"""Decoding one sample with the published pre-processing (Sun et al., CVPR 2023; EZ-VSL).

Images are decoded to uint8 RGB; train: shorter side to 246 (bicubic), random 224 crop, random horizontal flip;
test: 224 x 224 (bicubic). The ImageNet normalisation happens later, on the batch, on the device. Audio:
:func:`fnac_lab.audio.published_spectrogram` at the native rate (mono mix, centre 3 s, tiling), divided by 12.
"""

from __future__ import annotations

import os

import soundfile
import torch
import torchaudio.functional
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from ..audio import NOVERLAP, NPERSEG, WINDOW_SECONDS, AudioDecodeError, load_audio, published_spectrogram
from ..metrics import MAP_SIZE
from ..utils import FnacError

TRAIN_RESIZE = 246  #: published train transform: shorter side to 246 px, then a random 224 crop
CROP = 224


class FileDecodeError(FnacError):
    """An image, mask or annotation file exists but cannot be decoded."""


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


DECODE_ERRORS = (AudioDecodeError, FileDecodeError)
