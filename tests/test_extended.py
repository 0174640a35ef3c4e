"""The extended protocol (SLAVC, Mo and Morgado, NeurIPS 2022): scores checked against scikit-learn and plain loops,
the built-in negatives, the evaluation with negatives (existing scores unchanged), and the reader of the extended
test lists on a synthetic layout in their published form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from fnac_lab import metrics

# -- scores against independent computations ---------------------------------------------------------------------


def naive_counts(conf, ciou, positive, t, iou_threshold=0.5):
    tp = fp = fn = 0
    for c, iou, pos in zip(conf, ciou, positive):
        if c >= t:
            if pos and iou >= iou_threshold:
                tp += 1
            else:
                fp += 1
        elif pos:
            fn += 1
    return tp, fp, fn


def naive_pr(conf, ciou, positive, t):
    tp, fp, fn = naive_counts(conf, ciou, positive, t)
    return (1.0 if tp + fp == 0 else tp / (tp + fp)), (1.0 if tp + fn == 0 else tp / (tp + fn))


def naive_published_ap(conf, ciou, positive):
    ordered = sorted(conf)
    step = max(1, len(conf) // 200)
    thresholds = []
    i = len(ordered) - 2  # the largest confidence is left out
    while i >= 0:
        thresholds.append(ordered[i])
        i -= step
    pr = [naive_pr(conf, ciou, positive, t) for t in thresholds]
    return sum(max(p for p, _ in pr[j:]) * (pr[j + 1][1] - pr[j][1]) for j in range(len(pr) - 1))


def naive_max_f1(conf, ciou, positive, thresholds):
    best = 0.0
    for t in thresholds:
        p, r = naive_pr(conf, ciou, positive, t)
        best = max(best, 2 * p * r / (p + r) if p + r > 0 else 0.0)
    return best


def random_set(rng, n, *, misses=True, ties=False):
    positive = rng.random(n) < 0.5
    conf = rng.random(n) + 0.3 * positive
    if ties:
        conf = np.round(conf, 1)
    ciou = np.where(positive, rng.random(n) if misses else rng.uniform(0.5, 1.0, n), np.nan)
    return conf, ciou, positive


@pytest.mark.parametrize("n", [3, 17, 250, 611])
@pytest.mark.parametrize("ties", [False, True])
def test_published_scores_match_plain_loops(n, ties):
    rng = np.random.default_rng(n + ties)
    conf, ciou, positive = random_set(rng, n, ties=ties)
    assert metrics.extended_ap(conf, ciou, positive) == pytest.approx(naive_published_ap(conf, ciou, positive), abs=1e-12)
    deciles = sorted(conf)[:: max(1, n // 10)]
    assert metrics.max_f1(conf, ciou, positive) == pytest.approx(naive_max_f1(conf, ciou, positive, deciles), abs=1e-12)
    assert metrics.max_f1(conf, ciou, positive, published=False) == pytest.approx(
        naive_max_f1(conf, ciou, positive, sorted(set(conf))), abs=1e-12)
    summary = metrics.extended_summary(conf, ciou, positive)
    assert summary["precision"] == pytest.approx(naive_pr(conf, ciou, positive, 0.5)[0], abs=1e-12)
    assert (summary["n_positives"], summary["n_negatives"]) == (positive.sum(), (~positive).sum())
    for t in (conf.min(), np.median(conf), conf.max() + 1):
        tp, fp, fn = metrics.detection_counts(conf, ciou, positive, [t])
        assert (tp[0], fp[0], fn[0]) == naive_counts(conf, ciou, positive, t)


@pytest.mark.parametrize("ties", [False, True])
def test_every_threshold_ap_is_sklearns_when_every_positive_is_localised(ties):
    rng = np.random.default_rng(5)
    for n in (4, 60, 501):
        conf, ciou, positive = random_set(rng, n, misses=False, ties=ties)
        assert metrics.extended_ap(conf, ciou, positive, published=False) == pytest.approx(
            average_precision_score(positive, conf), abs=1e-12)


def test_published_ap_conventions():
    # a perfect ranking; the published sum starts at the second-highest confidence
    conf, positive = np.array([0.9, 0.8, 0.7, 0.2, 0.1]), np.array([1, 1, 1, 0, 0], bool)
    ciou = np.where(positive, 0.9, np.nan)
    assert metrics.extended_ap(conf, ciou, positive, published=False) == pytest.approx(1.0)
    assert metrics.extended_ap(conf, ciou, positive) == pytest.approx(1 / 3)  # recall 2/3 at the second threshold
    # one confidence for every clip (the centre prior): no recall step, AP 0; F1 from everything detected
    same = np.full(5, 0.7)
    assert metrics.extended_ap(same, ciou, positive) == 0.0
    assert metrics.max_f1(same, ciou, positive) == pytest.approx(2 * 0.6 / 1.6)
    # a positive localised badly counts as a false positive when detected, a false negative when not
    tp, fp, fn = metrics.detection_counts([0.9, 0.1], [0.2, 0.9], [True, True], [0.5])
    assert (tp[0], fp[0], fn[0]) == (0, 1, 1)
    with pytest.raises(ValueError, match="finite"):
        metrics.extended_ap([0.1, np.nan], [0.5, 0.5], [True, False])
    with pytest.raises(ValueError, match="finite cIoU"):
        metrics.extended_summary([0.1, 0.2], [np.nan, 0.5], [True, False])


def test_map_confidence_is_the_top_quarter_on_the_absolute_scale():
    rng = np.random.default_rng(1)
    maps = rng.normal(0, 3, size=(4, 13, 11))
    tau = 0.07
    got = metrics.map_confidence(torch.as_tensor(maps), tau=tau)
    k = -(-13 * 11 // 4)
    for i in range(4):
        s = (maps[i].ravel() * tau + 1) / 2
        assert got[i].item() == pytest.approx(np.sort(s)[-k:].mean(), abs=1e-12)
    peak = metrics.map_confidence(torch.as_tensor(maps), tau=tau, reduce="max")
    np.testing.assert_allclose(peak.numpy(), (maps.reshape(4, -1).max(1) * tau + 1) / 2)
    # maps already on [0, 1] (the trivial maps): no rescaling
    uniform = torch.full((2, 8, 8), 0.25)
    assert metrics.map_confidence(uniform).tolist() == [0.25, 0.25]
    with pytest.raises(ValueError, match="reduce"):
        metrics.map_confidence(uniform, reduce="mean")
