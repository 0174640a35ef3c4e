"""Audio front-end with the published pre-processing, in torch so that it runs batched on a GPU.

Published pipeline (per clip): clip samples to [-1, 1], mix to mono, take the 3 s window centred on
the clip (start = max(duration / 2 - 1.5, 0) s), tile clips shorter than 3 s, then

    spec = log(scipy.signal.spectrogram(x, rate, nperseg=512, noverlap=274) + 1e-7)    # 257 bins
    spec = (spec - 0) / 12

with, at training time, one frequency mask and one time mask (random start, width 0..9, filled
with 0) applied before the normalisation (:func:`spec_augment` says how the published starts are drawn).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile
import torch

NPERSEG = 512
NOVERLAP = 274
LOG_FLOOR = 1e-7
SPEC_MEAN = 0.0
SPEC_STD = 12.0
WINDOW_SECONDS = 3.0


class AudioDecodeError(RuntimeError):
    """An audio file exists but cannot be decoded."""


@lru_cache(maxsize=8)
def _tukey_window(device: str, dtype: torch.dtype) -> torch.Tensor:
    # scipy's default spectrogram window: periodic Tukey(0.25). torch has no Tukey window.
    win = scipy.signal.get_window(("tukey", 0.25), NPERSEG)
    return torch.as_tensor(win, dtype=dtype, device=device)


def log_spectrogram(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``log(scipy.signal.spectrogram(wave, sample_rate, nperseg=512, noverlap=274) + 1e-7)``.

    ``wave``: ``[T]`` or ``[B, T]`` float tensor with ``T >= 512``. Returns ``[257, F]`` or
    ``[B, 257, F]`` float32 with ``F = (T - 512) // 238 + 1``. Matches scipy's defaults: periodic
    Tukey(0.25) window, per-segment mean removal, one-sided power spectral density. torch.stft and
    torchaudio's Spectrogram have no per-segment detrend, so the segments are framed by hand and
    transformed with ``torch.fft.rfft``; the arithmetic runs in float64 so that quiet bins agree with
    scipy near the 1e-7 floor.
    """
    if wave.shape[-1] < NPERSEG:
        raise ValueError(f"need at least {NPERSEG} samples for a spectrogram, got {wave.shape[-1]}")
    x = wave.to(torch.float64)
    frames = x.unfold(-1, NPERSEG, NPERSEG - NOVERLAP)  # [..., F, 512]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    win = _tukey_window(str(x.device), torch.float64)
    power = torch.fft.rfft(frames * win, n=NPERSEG).abs().square()
    power = power / (sample_rate * win.square().sum())
    power[..., 1:-1] *= 2  # one-sided density: double all bins but DC and Nyquist (even nperseg)
    return torch.log(power + LOG_FLOOR).transpose(-1, -2).to(torch.float32)


def centre_window(wave: torch.Tensor, sample_rate: int, seconds: float = WINDOW_SECONDS) -> torch.Tensor:
    """The ``seconds``-long window centred on a mono clip ``[T]``; shorter clips are tiled.

    The window starts at ``max(duration / 2 - seconds / 2, 0)`` seconds (floored to a sample). A clip
    shorter than the window is repeated ``int(N / T) + 1`` times and cut to ``N = int(rate * seconds)``.
    """
    if wave.dim() != 1 or wave.numel() == 0:
        raise ValueError(f"expected a non-empty mono waveform [T], got shape {tuple(wave.shape)}")
    n = int(sample_rate * seconds)
    total = wave.shape[0]
    start = int(max(total / sample_rate / 2 - seconds / 2, 0.0) * sample_rate)
    window = wave[start : start + n]
    if window.shape[0] < n:
        window = window.repeat(n // window.shape[0] + 1)[:n]
    return window


def to_mono(samples: torch.Tensor) -> torch.Tensor:
    """Clip to [-1, 1] and average channels: ``[C, T]`` (or ``[T]``) to ``[T]``."""
    samples = samples.clamp(-1.0, 1.0)
    return samples.mean(dim=0) if samples.dim() == 2 else samples


def normalise_spectrogram(spec: torch.Tensor) -> torch.Tensor:
    """``(spec - 0) / 12``, the published log-spectrogram normalisation."""
    return (spec - SPEC_MEAN) / SPEC_STD


#: SpecAugment draws: see :func:`spec_augment`.
SPEC_AUGMENT_DRAWS = ("per_axis", "published")


def spec_augment(spec: torch.Tensor, max_width: int = 10, generator: torch.Generator | None = None,
                 draw: str = "per_axis") -> torch.Tensor:
    """One frequency and one time mask per sample of a batch ``[B, ..., freq, time]``, filled with 0.

    Each mask draws a width ``w = U * max_width`` and covers ``floor(w)`` bins (0..max_width - 1) from its start:

    - ``draw="per_axis"`` (default): start ``floor(U' * (size - w))`` on the masked axis itself, so every mask
      lies wholly inside its axis: the distribution of torchaudio's ``FrequencyMasking`` / ``TimeMasking`` on a
      single example (torchaudio's per-example ``iid_masks`` variant rounds the ends separately and reaches
      ``max_width`` bins, hence written out here, batched on the device).
    - ``draw="published"``: the published masks draw the frequency mask's start from the *time* length and the
      time mask's start from the *frequency* length, ``floor(U' * other_size)``; a mask starting beyond its axis
      masks nothing and one near its end is cut. With 257 bins and 200 frames (16 kHz) 30 % of clips get no
      time mask (10 % with ``per_axis``); at 44.1 kHz (554 frames) 58 % get no frequency mask (measured on the
      published code: 30 % and 57 %).
    """
    if draw not in SPEC_AUGMENT_DRAWS:
        raise ValueError(f"draw must be one of {SPEC_AUGMENT_DRAWS}, got {draw!r}")
    out = spec.clone()
    b = spec.shape[0]
    for axis, other in ((-2, -1), (-1, -2)):
        size = spec.shape[axis]
        width = torch.rand(b, device=spec.device, generator=generator) * max_width
        span = (size - width) if draw == "per_axis" else torch.full_like(width, spec.shape[other])
        start = (torch.rand(b, device=spec.device, generator=generator) * span).long()
        pos = torch.arange(size, device=spec.device)
        hit = (pos >= start[:, None]) & (pos < start[:, None] + width.long()[:, None])  # [B, size]
        shape = [b] + [1] * (spec.dim() - 1)
        shape[axis] = size
        out = out.masked_fill(hit.view(shape), 0.0)
    return out


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Decode an audio file with soundfile: ``([channels, T] float32 in [-1, 1], sample_rate)``.

    Integer formats are scaled to [-1, 1]; float formats are returned as stored. A file that cannot be
    decoded raises :class:`AudioDecodeError` naming it.
    """
    path = Path(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError or TypeError by case
        raise AudioDecodeError(f"{path}: cannot decode audio ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{path}: audio file holds no samples")
    if not np.isfinite(data).all():
        raise AudioDecodeError(f"{path}: audio holds NaN or inf samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)


def published_spectrogram(samples: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Clip samples ``[C, T]`` to the published log-spectrogram ``[257, F]`` (before normalisation)."""
    return log_spectrogram(centre_window(to_mono(samples), sample_rate), sample_rate)
