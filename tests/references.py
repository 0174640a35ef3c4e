"""Independent reference implementations shared by the tests: plain numpy and scipy, one sample at a time,
written from the paper's and the benchmarks' published conventions and never calling the package."""

from __future__ import annotations

import numpy as np
import scipy.integrate
import scipy.signal
import soundfile


def naive_ciou(pred: np.ndarray, gt: np.ndarray) -> float:
    """One map as the published evaluator sees it: float32, min-max, sort-based median threshold, ties in."""
    p = np.asarray(pred).astype(np.float32)
    if p.max() != p.min():
        p = (p - p.min()) / (p.max() - p.min())
    thr = np.sort(p.flatten())[int(p.shape[0] * p.shape[1] / 2)]
    region = np.zeros(p.shape)
    region[p >= thr] = 1
    return float(np.sum(region * gt) / (np.sum(gt) + np.sum(region * (gt == 0))))


def naive_gt(boxes, mode: str, size: int = 224) -> np.ndarray:
    """Integer pixel boxes to a VGG-SS (binary union) or Flickr (consensus / 2, clipped at 1) map."""
    acc = np.zeros((size, size))
    for x0, y0, x1, y1 in boxes:
        tmp = np.zeros((size, size))
        tmp[y0:y1, x0:x1] = 1
        acc += tmp
    if mode == "vggss":
        acc[acc > 0] = 1
        return acc
    acc = acc / 2
    acc[acc > 1] = 1
    return acc


def naive_summary(values) -> dict:
    """AP50, mean cIoU and the trapezoid AUC of the success rate over t = 0.05 * i."""
    values = np.asarray(values)
    thresholds = [0.05 * i for i in range(21)]
    curve = [np.sum(values >= t) / len(values) for t in thresholds]
    return {"ap50": np.sum(values >= 0.5) / len(values), "mean_ciou": values.mean(),
            "auc": scipy.integrate.trapezoid(curve, thresholds)}


def scipy_log_spectrogram(x: np.ndarray, rate: int) -> np.ndarray:
    """``log(scipy.signal.spectrogram(x, rate, nperseg=512, noverlap=274) + 1e-7)``."""
    _, _, spec = scipy.signal.spectrogram(x, rate, nperseg=512, noverlap=274)
    return np.log(spec + 1e-7)


def naive_window(x: np.ndarray, rate: int, seconds: float = 3.0) -> np.ndarray:
    """The published window: centred start, tiled when short, cut to ``int(rate * seconds)`` samples."""
    start = int(max(len(x) / rate / 2 - seconds / 2, 0) * rate)
    x = x[start:start + int(rate * seconds)]
    if x.shape[0] < rate * seconds:
        x = np.tile(x, int(rate * seconds / x.shape[0]) + 1)
    return x[: int(rate * seconds)]


def file_log_spectrogram(path) -> np.ndarray:
    """A wav file through soundfile, clipping, mono mix, the centre window and scipy (before the / 12)."""
    x, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    mono = np.clip(x, -1, 1).mean(axis=1)
    return scipy_log_spectrogram(naive_window(mono, rate), rate)
