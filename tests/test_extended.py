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
from fnac_lab.scoring import evaluate_model, evaluate_with_negatives
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
    # maps already on [0, 1] (the reference maps): no rescaling
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
    for name, scores in plain.reference_maps.items():
        assert {k: ext.reference_maps[name][k] for k in scores} == scores
    assert "extended_ap" not in plain.scores and "extended_ap" not in ext.reference_maps["oracle"]
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
    assert ext.reference_maps["centre_prior"]["extended_ap"] == 0.0


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
        if key != "reference_maps":
            assert new["test"][key] == value, key
    for name, scores in old["test"]["reference_maps"].items():
        assert {k: new["test"]["reference_maps"][name][k] for k in scores} == scores
    assert {"extended_ap", "max_f1", "precision"} <= set(new["test"]) and new["test"]["n_negatives"] == 32
    assert "extended_ap" in new["test"]["reference_maps"]["random"] and "extended_ap" not in new["test"]["reference_maps"]["oracle"]


def test_report_adds_the_extended_columns_only_with_negatives(trained):
    cfg = smoke(epochs=1, warmup_epochs=0)
    first = analysis.run_metrics(trained["out"])
    report = analysis.run_report(cfg.replace(test_negatives=0.5), [first], [first])
    table = analysis.scores_table(report)
    assert list(table.columns) == ["AP50", "mean cIoU", "AUC", "extended AP", "max-F1", "precision"]
    assert table.loc["FNAC", "extended AP"] == report["extended_ap"] and np.isnan(table.loc["oracle (gt-derived)", "max-F1"])
    assert any("negatives beside the 64 test samples" in line for line in analysis.what_this_run_shows(report))
    plain = {k: v for k, v in first.items() if k not in ("extended_ap", "max_f1", "precision", "n_negatives")}
    plain["reference_maps"] = {name: {k: v for k, v in scores.items() if k in ("ap50", "mean_ciou", "auc")}
                        for name, scores in first["reference_maps"].items()}
    report = analysis.run_report(cfg, [plain], [plain])
    assert list(analysis.scores_table(report).columns) == ["AP50", "mean cIoU", "AUC"]
    assert set(report["seeds"][0]) == {"seed", "ap50", "mean_ciou", "auc", "baseline"}
    assert "test_negatives" not in report["config"]


def evaluate(*args) -> int:
    return main(["evaluate", "--quiet", *map(str, args)])


def test_evaluate_scores_an_existing_checkpoint_on_the_extended_protocol(trained, tmp_path, capsys):
    ckpt = trained["out"] / "checkpoints" / "best.pt"
    summary = json.loads((trained["out"] / "summary.json").read_text())["test"]
    assert evaluate("--checkpoint", ckpt, "--out", tmp_path / "plain") == 0
    plain = json.loads((tmp_path / "plain" / "scores.json").read_text())
    assert "extended_ap" not in plain and not (tmp_path / "plain" / "negatives.csv").exists()
    with open(tmp_path / "plain" / "per_sample.csv") as fh:
        assert next(csv.reader(fh)) == ["id", "ciou", "class"]
    assert evaluate("--checkpoint", ckpt, "--out", tmp_path / "ext", "--set", "test_negatives=0.5") == 0
    assert "and 32 negatives: extended AP" in capsys.readouterr().out
    ext = json.loads((tmp_path / "ext" / "scores.json").read_text())
    for key in ("ap50", "mean_ciou", "auc", "n_samples"):
        assert ext[key] == plain[key]
    for key in ("extended_ap", "max_f1", "precision", "n_negatives"):
        assert ext[key] == summary[key]
        assert ext["reference_maps"]["centre_prior"][key] == summary["reference_maps"]["centre_prior"][key]
    with open(tmp_path / "ext" / "negatives.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 32 and {r["kind"] for r in rows} == {"silent", "off_screen"}
    with open(tmp_path / "ext" / "per_sample.csv") as fh:
        assert next(csv.reader(fh)) == ["id", "ciou", "class", "confidence"]
    assert evaluate("--checkpoint", ckpt, "--out", tmp_path / "x", "--set", "n_test=10") == 2
    assert "evaluate changes only test_negatives" in capsys.readouterr().err
    assert evaluate("--checkpoint", ckpt, "--out", tmp_path / "x", "--set", "test_negatives=0.5",
                    "--split", NEGATIVES_SPLIT) == 2
    assert "scored with --split test" in capsys.readouterr().err


# -- the extended test sets as distributed -------------------------------------------------------------------------


POSITIVES = ["-4FbzCa5Ido_000010", "0k6JYkq3YTg_000120", "Zz_y-3kQ1Ws_000031"]
OFF_SCREEN = ["a3hd9-Kq0lE_000200", "ZCsiG1y-aBk_000051"]  # clips that appear only as negatives


def add_clip(root, ident: str, k: int, *, frame: bool = True, audio: bool = True) -> None:
    rng = np.random.default_rng(k)
    (root / "frames").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    if frame:
        pixels = rng.integers(0, 256, size=(9, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((96 + 8 * k, 72), Image.BILINEAR).save(root / "frames" / f"{ident}.jpg")
    if audio:
        t = np.arange(16000) / 16000
        soundfile.write(str(root / "audio" / f"{ident}.wav"), 0.4 * np.sin(2 * np.pi * (300 + 90 * k) * t)
                        + 0.02 * rng.standard_normal(t.size), 16000, subtype="PCM_16")


@pytest.fixture(scope="module")
def extended_layout(tmp_path_factory):
    """Extended VGG-SS in its published form: frames/ and audio/ holding positives and negatives, vggss.json and
    vggss_test.csv for the positives, vggss_test_plus_silent.csv (video,audio,label) for the negatives: one clip
    heard with its own audio, two frames heard with another clip's audio, and one whose audio is absent."""
    root = tmp_path_factory.mktemp("vggss_extended")
    for k, ident in enumerate(POSITIVES + OFF_SCREEN):
        add_clip(root, ident, k)
    add_clip(root, "noaudio0000_000001", 9, audio=False)
    boxes = [[[0.1, 0.2, 0.6, 0.9]], [[0.0, 0.0, 0.5, 0.5], [0.4, 0.4, 1.0, 1.0]], [[0.3, 0.1, 0.8, 0.7]]]
    (root / "vggss.json").write_text(json.dumps([{"file": i, "class": "dog barking", "bbox": b}
                                                 for i, b in zip(POSITIVES, boxes)]))
    (root / "vggss_test.csv").write_text("".join(f"{i}\n" for i in POSITIVES))
    rows = [(OFF_SCREEN[0], OFF_SCREEN[0]), (POSITIVES[0], OFF_SCREEN[1]), (OFF_SCREEN[1], POSITIVES[2]),
            ("noaudio0000_000001", "missing0000_000002")]
    (root / "vggss_test_plus_silent.csv").write_text("video,audio,label\n"
                                                     + "".join(f"{v},{a},non-sounding\n" for v, a in rows))
    return root


def test_negatives_list_as_distributed(extended_layout, tmp_path):
    pairs = annotation_files.read_negatives_list(extended_layout / "vggss_test_plus_silent.csv")
    assert pairs[0] == (OFF_SCREEN[0], OFF_SCREEN[0]) and len(pairs) == 4
    neg = real.open_negatives(extended_layout, extended_layout / "vggss_test_plus_silent.csv")
    assert neg.ids == [OFF_SCREEN[0], f"{POSITIVES[0]}+{OFF_SCREEN[1]}", f"{OFF_SCREEN[1]}+{POSITIVES[2]}"]
    assert neg.samples[1].frame.stem == POSITIVES[0] and neg.samples[1].audio.stem == OFF_SCREEN[1]
    assert neg.missing == [("noaudio0000_000001+missing0000_000002",
                            f"no audio missing0000_000002 in {extended_layout / 'audio'}")]
    item = neg[1]
    assert "gt" not in item and item["label"] == "non-sounding" and item["image"].shape == (3, 224, 224)
    for text, message in (("video,audio,label\na,b,sounding\n", r":2: label 'sounding' is not 'non-sounding'"),
                          ("a,b\n", r":1: expected video,audio,non-sounding"),
                          ("a,b,non-sounding\nc,d,non-sounding\na,b,non-sounding\n", r":3: the pair a,b repeats line 1"),
                          ("video,audio,label\n", "negatives list is empty")):
        path = tmp_path / "list.csv"
        path.write_text(text)
        with pytest.raises(FnacError, match=f"{path}{message}" if message.startswith(":") else message):
            annotation_files.read_negatives_list(path)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    cfg = preset("smoke", visual_stage=0, audio_stage=0, embed_dim=16, visual_dropout=0.0)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"config": cfg.to_dict(), "epoch": 0, "model": build_model(cfg).state_dict(), "history": [],
                "best": {}}, path)
    return path


def test_evaluate_an_extended_set(extended_layout, tiny_checkpoint, tmp_path, capsys):
    root = extended_layout
    base = ["--checkpoint", tiny_checkpoint, "--data-root", root, "--annotations", root / "vggss.json",
            "--split-csv", root / "vggss_test.csv", "--workers", "0", "--batch-size", "2"]
    assert evaluate("--testset", "vggss", "--out", tmp_path / "plain", *base) == 0
    assert evaluate("--testset", "vggss_extended", "--out", tmp_path / "ext", *base) == 0  # the list found in ROOT
    assert "and 3 negatives: extended AP" in capsys.readouterr().out
    plain = json.loads((tmp_path / "plain" / "scores.json").read_text())
    ext = json.loads((tmp_path / "ext" / "scores.json").read_text())
    for key in ("ap50", "mean_ciou", "auc", "n_samples"):
        assert ext[key] == plain[key]
    assert (ext["n_positives"], ext["n_negatives"], ext["n_negatives_missing"]) == (3, 3, 1)
    with open(tmp_path / "ext" / "per_sample.csv") as fh:
        positives = list(csv.DictReader(fh))
    with open(tmp_path / "ext" / "negatives.csv") as fh:
        negatives = list(csv.DictReader(fh))
    assert [r["id"] for r in positives] == POSITIVES and len(negatives) == 3
    conf = [float(r["confidence"]) for r in positives] + [float(r["confidence"]) for r in negatives]
    ciou = [float(r["ciou"]) for r in positives] + [float("nan")] * 3
    positive = [True] * 3 + [False] * 3
    assert ext["extended_ap"] == pytest.approx(naive_published_ap(conf, ciou, positive), abs=1e-5)
    assert ext["precision"] == pytest.approx(naive_pr(conf, ciou, positive, 0.5)[0], abs=1e-5)
    assert "extended_ap" in ext["reference_maps"]["random"] and "extended_ap" not in ext["reference_maps"]["oracle"]
    with open(tmp_path / "ext" / "missing.csv") as fh:
        assert [r["id"] for r in csv.DictReader(fh)] == ["noaudio0000_000001+missing0000_000002"]
    (root / "elsewhere").mkdir(exist_ok=True)
    assert evaluate("--testset", "vggss_extended", "--out", tmp_path / "x", *base[:2], "--data-root", root / "elsewhere",
                    "--annotations", root / "vggss.json") == 2
    assert "needs its negatives list: pass --negatives vggss_test_plus_silent.csv" in capsys.readouterr().err


def test_extended_flickr_layout(tmp_path, tiny_checkpoint):
    root = tmp_path / "flickr"
    ids = ["10000130166", "10007936344", "10437048305"]
    for k, ident in enumerate(ids):
        add_clip(root, ident, k)
    (root / "Annotations").mkdir()
    for ident in ids[:2]:
        (root / "Annotations" / f"{ident}.xml").write_text(
            "<annotation><object><bbox><name>x</name><xmin>20</xmin><ymin>30</ymin><xmax>180</xmax><ymax>200</ymax>"
            "</bbox></object></annotation>")
    (root / "flickr_test.csv").write_text("".join(f"{i}\n" for i in ids[:2]))
    listed = tmp_path / "flickr_test_plus_silent.csv"
    listed.write_text(f"video,audio,label\n{ids[0]},{ids[2]},non-sounding\n{ids[2]},{ids[1]},non-sounding\n")
    assert evaluate("--testset", "flickr_extended", "--checkpoint", tiny_checkpoint, "--data-root", root,
                    "--annotations", root / "Annotations", "--split-csv", root / "flickr_test.csv", "--negatives",
                    listed, "--out", tmp_path / "out", "--workers", "0") == 0
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert (scores["testset"], scores["n_samples"], scores["n_negatives"]) == ("flickr_extended", 2, 2)
    with pytest.raises(ConfigError, match="select a model on"):
        build_datasets(TrainConfig(dataset="real", testset="flickr_extended", train_root=str(root),
                                   test_root=str(root), test_annotations=str(root / "Annotations")))
