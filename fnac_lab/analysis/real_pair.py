"""A real false negative for the tutorial: two stamps of one class from Tux Paint's photographs, each with its own
recording (two birds, two songs), beside a stamp of another class (:mod:`fnac_lab.data.stamps`).

Each recording goes through the published audio pipeline (the 3 s centre window at 16 kHz, its log-spectrogram),
and its spectral centroid (the power-weighted mean frequency of the Hann-windowed window) says where its energy
sits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal
import torch

from ..audio import centre_window, log_spectrogram
from ..data.sampling import false_negative_ratio
from ..data.stamps import Stamp, open_source, read_class_table
from ..data.stamps_render import load_cutout, load_recording
from ..utils import FnacError

#: Two songbirds of the class wild_bird and, for contrast, a cow.
PAIR = ("animals/birds/blackbird", "animals/birds/lark")
CONTRAST = "animals/mammals/bovines/cow"
RATE = 16_000


@dataclass
class RealStamps:
    """Stamps of the tutorial's real false negative: names, classes, RGBA cut-outs, log-spectrograms, centroids."""

    stamps: list[Stamp]
    pictures: list[np.ndarray]
    spectrograms: list[torch.Tensor]
    centroids_hz: list[float]

    @property
    def fn_ratio(self) -> float:
        """The false-negative ratio of a batch holding these clips."""
        return false_negative_ratio([s.label for s in self.stamps])

    def summary(self) -> str:
        first, second, other = self.stamps
        names = [s.name.rsplit("/", 1)[-1] for s in self.stamps]
        return (f"{names[0]} and {names[1]} are both {first.label}: different birds, different recordings, one class.\n"
                f"In a batch with the {names[2]} ({other.label}) they make 2 of its 3 members false negatives "
                f"(FN ratio {self.fn_ratio:.2f}).\nSpectral centroids: "
                + ", ".join(f"{n} {c / 1000:.1f} kHz" for n, c in zip(names, self.centroids_hz)))


def spectral_centroid(wave: np.ndarray, rate: int) -> float:
    """``sum_f f P(f) / sum_f P(f)`` over the one-sided power spectrum ``P`` of ``wave`` under a Hann window
    (:func:`scipy.signal.periodogram`), in Hz."""
    freqs, power = scipy.signal.periodogram(wave, fs=rate, window="hann", detrend=False)
    return float((freqs * power).sum() / power.sum())


def real_false_negative(source=None, names: tuple[str, ...] = (*PAIR, CONTRAST)) -> RealStamps | None:
    """The stamps ``names`` from ``source`` (default: the fetched packages), or None when no source is there."""
    try:
        src = open_source(source)
    except FnacError:
        return None
    table = {s.name: s for s in read_class_table()}
    stamps = [table[n] for n in names]
    windows = [centre_window(torch.from_numpy(load_recording(str(s.file(src.stamps, "recording")), RATE)).float(),
                             RATE) for s in stamps]
    return RealStamps(stamps=stamps,
                      pictures=[np.asarray(load_cutout(str(s.file(src.stamps, "picture")))) for s in stamps],
                      spectrograms=[log_spectrogram(w, RATE) for w in windows],
                      centroids_hz=[spectral_centroid(w.numpy().astype(np.float64), RATE) for w in windows])
