"""Audio front-end against scipy and against plain numpy versions of the published pre-processing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from fnac_lab import audio
from references import naive_window, scipy_log_spectrogram


def _clip(rate: int, seconds: float, seed: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.4 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sin(2 * np.pi * 2500 * t + 1.0)
    x = tone[None] + 0.05 * rng.standard_normal((channels, t.size)) + 0.1  # a DC offset for the detrend
    return x if channels > 1 else x[0]


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_log_spectrogram_equals_scipy(rate):
    x = _clip(rate, 3.0, rate)
    got = audio.log_spectrogram(torch.tensor(x, dtype=torch.float32), rate).numpy()
    ref = scipy_log_spectrogram(x.astype(np.float32).astype(np.float64), rate)
    assert got.shape == ref.shape == (257, (int(rate * 3.0) - 512) // 238 + 1)
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)


def test_log_spectrogram_batched_and_silent():
    x = np.stack([_clip(16000, 3.0, s) for s in range(3)] + [np.zeros(48000)])
    got = audio.log_spectrogram(torch.tensor(x), 16000).numpy()
    for i in range(len(x)):
        np.testing.assert_allclose(got[i], scipy_log_spectrogram(x[i], 16000), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="512"):
        audio.log_spectrogram(torch.zeros(100), 16000)


@pytest.mark.parametrize("seconds", [0.2, 1.0, 2.999, 3.0, 7.3, 10.0])
@pytest.mark.parametrize("rate", [11025, 16000])
def test_centre_window_and_tiling(seconds, rate):
    x = np.random.default_rng(0).uniform(-1, 1, int(rate * seconds)).astype(np.float32)
    got = audio.centre_window(torch.from_numpy(x), rate).numpy()
    np.testing.assert_array_equal(got, naive_window(x, rate))


def test_published_spectrogram_mixes_clips_and_centres():
    rate = 16000
    x = _clip(rate, 5.0, 1, channels=2) * 1.5  # beyond [-1, 1]: clipped first
    got = audio.published_spectrogram(torch.tensor(x, dtype=torch.float32), rate).numpy()
    mono = np.clip(x.astype(np.float32), -1, 1).mean(0)
    ref = scipy_log_spectrogram(naive_window(mono, rate).astype(np.float64), rate)
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)


def test_spec_augment_masks():
    torch.manual_seed(0)
    spec = torch.ones(400, 1, 257, 200)
    out = audio.spec_augment(spec)
    widths_f, widths_t = [], []
    for s in out[:, 0]:
        zero = s == 0
        rows = zero.all(dim=1).nonzero().flatten()
        cols = zero.all(dim=0).nonzero().flatten()
        # every zero lies in one full-height time band or one full-width frequency band
        band = torch.zeros_like(zero)
        band[rows, :] = True
        band[:, cols] = True
        assert torch.equal(zero, band)
        for idx, acc in ((rows, widths_f), (cols, widths_t)):
            if len(idx):
                assert torch.equal(idx, torch.arange(idx[0], idx[0] + len(idx)))  # contiguous
            acc.append(len(idx))
    for widths in (widths_f, widths_t):
        assert min(widths) == 0 and max(widths) == 9
        # widths floor(U * 10) are uniform on 0..9
        counts = np.bincount(widths, minlength=10)
        assert counts.min() > 20
    assert torch.equal(spec, torch.ones_like(spec))  # input untouched


def sampled_mask_counts(draw: str, freq: int, time: int, n: int, rng: np.random.Generator) -> dict[str, float]:
    """Independent sampling of one mask per axis by the two rules, written from their definitions: width
    floor(10 U); start floor(U' (size - 10 U)) on its own axis (per_axis) or floor(U' * other size) (published);
    bins [start, start + width) that fall inside the axis are masked."""
    out = {}
    for axis, size, other in (("freq", freq, time), ("time", time, freq)):
        w = rng.random(n) * 10
        u = rng.random(n)
        start = np.floor(u * (size - w)) if draw == "per_axis" else np.floor(u * other)
        masked = np.clip(np.minimum(start + np.floor(w), size) - start, 0, None)
        out[f"no_{axis}"] = float(np.mean(masked == 0))
        out[f"mean_{axis}"] = float(np.mean(masked))
    return out


@pytest.mark.parametrize("draw", ["per_axis", "published"])
@pytest.mark.parametrize("frames", [200, 554])  # 3 s at 16 kHz and at 44.1 kHz
def test_spec_augment_draws_against_independent_sampling(draw, frames):
    n, chunk = 3000, 500  # drawn in chunks: 3000 spectrograms at once would take 5 GB; the shares' standard error <= 0.01
    torch.manual_seed(1)
    masked_freq, masked_time = [], []  # per spectrogram: how many whole rows / columns are zero
    for _ in range(n // chunk):
        zero = audio.spec_augment(torch.ones(chunk, 1, 257, frames), draw=draw)[:, 0] == 0
        masked_freq.append(zero.all(dim=2).sum(dim=1))
        masked_time.append(zero.all(dim=1).sum(dim=1))
    masked_freq, masked_time = torch.cat(masked_freq).float(), torch.cat(masked_time).float()
    got = {"no_freq": float((masked_freq == 0).float().mean()), "no_time": float((masked_time == 0).float().mean()),
           "mean_freq": float(masked_freq.mean()), "mean_time": float(masked_time.mean())}
    want = sampled_mask_counts(draw, 257, frames, 200_000, np.random.default_rng(0))
    for key in want:
        tolerance = 0.02 if key.startswith("no_") else 0.15
        assert got[key] == pytest.approx(want[key], abs=tolerance), (key, got, want)
    if draw == "published":  # the shares measured on the published code (30 % and 57 %, from a finite sample)
        assert want["no_time" if frames == 200 else "no_freq"] == pytest.approx(0.30 if frames == 200 else 0.57, abs=0.02)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT", "PCM_U8"])
def test_load_audio_formats(tmp_path, subtype):
    rate, x = 22050, _clip(22050, 0.5, 2, channels=2).T * 0.5
    path = tmp_path / f"clip_{subtype}.wav"
    soundfile.write(path, x, rate, subtype=subtype)
    samples, got_rate = audio.load_audio(path)
    assert got_rate == rate and samples.shape == (2, x.shape[0]) and samples.dtype == torch.float32
    tol = {"PCM_16": 1 / 2**15, "PCM_24": 1 / 2**23, "FLOAT": 1e-7, "PCM_U8": 1 / 2**7}[subtype]
    np.testing.assert_allclose(samples.numpy(), x.T, atol=tol)


def test_load_audio_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(audio.AudioDecodeError, match="broken.wav"):
        audio.load_audio(bad)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros((0, 1)), 16000)
    with pytest.raises(audio.AudioDecodeError, match="empty.wav"):
        audio.load_audio(empty)
