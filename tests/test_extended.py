"""The extended protocol (SLAVC, Mo and Morgado, NeurIPS 2022): scores checked against scikit-learn and plain loops,
the built-in negatives, the evaluation with negatives (existing scores unchanged), and the reader of the extended
test lists on a synthetic layout in their published form."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from fnac_lab import analysis, metrics
from fnac_lab.checkpoint import build_model
from fnac_lab.cli import main
from fnac_lab.config import ConfigError, TrainConfig, preset
from fnac_lab.data import annotations as annotation_files, builtin, negatives as negatives_module, real
from fnac_lab.datasets import NEGATIVES_SPLIT, build_datasets
from fnac_lab.evaluate import evaluate_model, evaluate_with_negatives
from fnac_lab.train import train
from fnac_lab.utils import FnacError

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


# -- built-in negatives -----------------------------------------------------------------------------------------


def smoke(**changes):
    return preset("smoke", n_train=64, **changes)


def test_negatives_leave_every_split_bit_identical():
    builtin._generate.cache_clear()
    plain = build_datasets(smoke())
    builtin._generate.cache_clear()
    extended = build_datasets(smoke(test_negatives=0.5))
    assert NEGATIVES_SPLIT not in plain and set(extended) == {*plain, NEGATIVES_SPLIT}
    for name in plain:
        a, b = plain[name], extended[name]
        assert a is not b and a.ids == b.ids
        for field in ("images", "specs", "boxes", "labels", "distractor_boxes", "distractor_labels", "scenes"):
            assert torch.equal(getattr(a, field), getattr(b, field)), (name, field)
    neg = extended[NEGATIVES_SPLIT]
    assert len(neg) == 32 and neg.kinds.count("silent") == neg.kinds.count("off_screen") == 16
    assert not set(neg.ids) & set(plain["test"].ids)
    batch = neg.batch(list(range(len(neg))))
    for kind, label, objects in zip(batch["kind"], batch["label"].tolist(), batch["distractor_labels"].tolist()):
        present = [c for c in objects if c >= 0]
        assert 2 <= len(present) <= 3
        if kind == "silent":
            assert label == -1
        else:
            assert label in plain["test"].classes and label not in present  # the sound of a class absent from the frame
    assert "box" not in batch and not torch.equal(neg.images[:4], plain["test"].images[:4])


def test_silent_clips_are_the_noise_of_a_clip_without_its_tone():
    spec = builtin.BuiltinSpec(n_classes=8)
    classes, scenes = np.array([3, 5]), np.full(2, -1)
    full = builtin._synthesise_audio(np.random.default_rng(7), spec, classes, scenes)
    silent = builtin._synthesise_audio(np.random.default_rng(7), spec, classes, scenes, silent=np.array([True, False]))
    assert torch.equal(full[1], silent[1])
    tone = (full[0] - silent[0]).double()
    f0 = spec.class_sound(3)[0]
    peak = float(np.argmax(np.abs(np.fft.rfft(tone.numpy())))) * spec.sample_rate / tone.numel()
    assert any(abs(peak - k * f0) < 0.05 * k * f0 for k in range(1, 7))  # the difference is the class tone
    noise_spectrum = np.abs(np.fft.rfft(silent[0].double().numpy()))
    assert noise_spectrum.max() < 10 * np.median(noise_spectrum)  # white noise: no line in the spectrum


def test_configuration_of_negatives():
    assert "test_negatives" not in smoke().to_dict()  # runs without negatives keep their recorded configuration
    assert smoke(test_negatives="0.5").to_dict()["test_negatives"] == 0.5
    for bad in (-0.5, float("nan"), 11):
        with pytest.raises(ConfigError, match="test_negatives"):
            smoke(test_negatives=bad)
    with pytest.raises(ConfigError, match="test_negatives.*built-in"):
        TrainConfig(dataset="real", test_negatives=0.5)
    assert negatives_module.negatives_count(0.5, 500) == 250 and negatives_module.negatives_count(0.0, 500) == 0


def test_evaluation_with_negatives_keeps_the_positive_scores():
    cfg = smoke(test_negatives=0.5)
    data = build_datasets(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    plain = evaluate_model(model, data["test"], batch_size=40, progress=False)
    ext = evaluate_with_negatives(model, data["test"], data[NEGATIVES_SPLIT], batch_size=40, keep_maps=True,
                                  progress=False)
    assert torch.equal(plain.cious, ext.cious)
    assert {k: ext.scores[k] for k in plain.scores} == plain.scores
    for name, scores in plain.baselines.items():
        assert {k: ext.baselines[name][k] for k in scores} == scores
    assert "extended_ap" not in plain.scores and "extended_ap" not in ext.baselines["oracle"]
    # confidences recomputed from the kept maps: the top quarter of (S tau + 1) / 2
    maps = np.concatenate([ext.maps, ext.negatives["maps"]]).reshape(96, -1).astype(np.float64)
    conf = np.sort((maps * model.tau + 1) / 2, axis=1)[:, -(224 * 224 // 4):].mean(axis=1)
    np.testing.assert_allclose(np.concatenate([ext.confidences["model"], ext.negatives["confidence"]["model"]]), conf,
                               rtol=0, atol=1e-9)
    positive = np.arange(96) < 64
    ciou = np.concatenate([plain.cious.numpy(), np.full(32, np.nan)])
    assert ext.scores["extended_ap"] == pytest.approx(naive_published_ap(conf, ciou, positive), abs=1e-9)
    assert ext.scores["precision"] == pytest.approx(naive_pr(conf, ciou, positive, 0.5)[0])
    assert (ext.scores["n_positives"], ext.scores["n_negatives"]) == (64, 32)
    # the centre prior gives every clip one confidence: no ranking, AP 0
    assert len(set(ext.confidences["centre_prior"]) | set(ext.negatives["confidence"]["centre_prior"])) == 1
    assert ext.baselines["centre_prior"]["extended_ap"] == 0.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run trained without negatives, then finished again with them (a resume: no epoch reruns)."""
    out = tmp_path_factory.mktemp("run") / "smoke"
    cfg = smoke(epochs=1, warmup_epochs=0)
    first = train(cfg, out, progress=False)
    before = {name: (out / name).read_text() for name in ("summary.json", "config.json", "metrics.jsonl")}
    again = train(cfg.replace(test_negatives=0.5), out, progress=False)
    return {"out": out, "before": before, "first": first, "again": again}


def test_a_run_scored_again_with_negatives_keeps_its_scores(trained):
    out, before = trained["out"], trained["before"]
    assert "test_negatives" not in json.loads(before["config.json"])
    old, new = json.loads(before["summary.json"]), json.loads((out / "summary.json").read_text())
    assert (out / "metrics.jsonl").read_text() == before["metrics.jsonl"]
    assert new["val"] == old["val"] and new["best_epoch"] == old["best_epoch"]
    for key, value in old["test"].items():
        if key != "baselines":
            assert new["test"][key] == value, key
    for name, scores in old["test"]["baselines"].items():
        assert {k: new["test"]["baselines"][name][k] for k in scores} == scores
    assert {"extended_ap", "max_f1", "precision"} <= set(new["test"]) and new["test"]["n_negatives"] == 32
    assert "extended_ap" in new["test"]["baselines"]["random"] and "extended_ap" not in new["test"]["baselines"]["oracle"]


def test_report_adds_the_extended_columns_only_with_negatives(trained):
    cfg = smoke(epochs=1, warmup_epochs=0)
    first = analysis.run_metrics(trained["out"])
    report = analysis.run_report(cfg.replace(test_negatives=0.5), [first], [first])
    table = analysis.scores_table(report)
    assert list(table.columns) == ["AP50", "mean cIoU", "AUC", "extended AP", "max-F1", "precision"]
    assert table.loc["FNAC", "extended AP"] == report["extended_ap"] and np.isnan(table.loc["oracle (gt-derived)", "max-F1"])
    assert any("negatives beside the 64 test samples" in line for line in analysis.what_this_run_shows(report))
    plain = {k: v for k, v in first.items() if k not in ("extended_ap", "max_f1", "precision", "n_negatives")}
    plain["trivial"] = {name: {k: v for k, v in scores.items() if k in ("ap50", "mean_ciou", "auc")}
                        for name, scores in first["trivial"].items()}
    report = analysis.run_report(cfg, [plain], [plain])
    assert list(analysis.scores_table(report).columns) == ["AP50", "mean cIoU", "AUC"]
    assert set(report["seeds"][0]) == {"seed", "ap50", "mean_ciou", "auc", "baseline"}
    assert "test_negatives" not in report["config"]
