"""The tutorial's real false negative: stamps read from a source, their windows' spectra and centroids."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
from PIL import Image

from fnac_lab.analysis.real_pair import CONTRAST, PAIR, real_false_negative, spectral_centroid
from fnac_lab.data.stamps import read_class_table

TONES = {PAIR[0]: 3000.0, PAIR[1]: 2500.0, CONTRAST: 500.0}


@pytest.fixture
def tones_source(tmp_path):
    """The three stamps as squares whose recordings are pure tones (44.1 kHz, 2 s), and one background."""
    stamps = tmp_path / "stamps"
    for name, hz in TONES.items():
        (stamps / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (150, 100), (200, 30, 30, 255)).save(stamps / f"{name}.png")
        t = np.arange(int(2 * 44100)) / 44100
        soundfile.write(stamps / f"{name}.ogg", 0.5 * np.sin(2 * np.pi * hz * t), 44100)
    (tmp_path / "templates").mkdir()
    return tmp_path


def test_the_centroid_is_the_power_weighted_mean_frequency():
    """Against a naive one-sided DFT in float64: interior bins count twice (both signs of the frequency)."""
    rng = np.random.default_rng(0)
    n, rate = 256, 8000
    wave = rng.normal(size=n)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann
    power, freqs = [], []
    for k in range(n // 2 + 1):
        x = sum(window[t] * wave[t] * complex(np.cos(2 * np.pi * k * t / n), -np.sin(2 * np.pi * k * t / n))
                for t in range(n))
        power.append(abs(x) ** 2 * (1 if k in (0, n // 2) else 2))
        freqs.append(k * rate / n)
    expected = sum(f * p for f, p in zip(freqs, power)) / sum(power)
    assert spectral_centroid(wave, rate) == pytest.approx(expected, rel=1e-9)


def test_the_real_pair_reads_its_stamps_from_the_source(tones_source):
    real = real_false_negative(tones_source)
    labels = {s.name: s.label for s in read_class_table()}
    assert [s.name for s in real.stamps] == [*PAIR, CONTRAST]
    assert [s.label for s in real.stamps] == [labels[n] for n in (*PAIR, CONTRAST)]
    assert real.stamps[0].label == real.stamps[1].label != real.stamps[2].label
    assert real.fn_ratio == pytest.approx(2 / 3)  # two of three members have a same-class partner
    for centroid, hz in zip(real.centroids_hz, TONES.values()):
        assert centroid == pytest.approx(hz, abs=25)
    assert all(p.shape == (100, 150, 4) for p in real.pictures)
    assert all(tuple(s.shape) == (257, 200) for s in real.spectrograms)  # the published 3 s window at 16 kHz
    assert "FN ratio 0.67" in real.summary() and "3.0 kHz" in real.summary()


def test_without_a_source_there_is_no_real_pair(tmp_path):
    assert real_false_negative(tmp_path / "nowhere") is None
