"""Training loop, checkpoints and the command line, end to end on the smoke preset."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fnac_lab.cli import main
from fnac_lab.config import preset
from fnac_lab.metrics import gt_map, vggss_box_to_pixels
from fnac_lab.datasets import build_datasets
from fnac_lab.train import train
from fnac_lab.utils import FnacError

TINY = dict(n_train=96, n_val=32, n_test=32, batch_size=16, epochs=2, warmup_epochs=1, image_size=32, embed_dim=32)
#: The FNAC weights at 0: a run of NCE alone, which may stop within the warm-up.
NCE_ONLY = dict(w_fns_audio=0, w_fns_visual=0, w_tne=0)


def fnac(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "fnac_lab", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    fnac("train", "--preset", "smoke", "--out", str(out), "--quiet")
    return out


def test_train_writes_metrics_and_checkpoints(smoke_run):
    lines = (smoke_run / "metrics.jsonl").read_text().splitlines()
    cfg = preset("smoke")
    assert len(lines) == cfg.epochs
    records = [json.loads(x) for x in lines]
    for i, r in enumerate(records):
        assert r["epoch"] == i + 1
        for key in ("ap50", "mean_ciou", "auc", "nce", "fns_audio", "fns_visual", "tne", "loss"):
            assert np.isfinite(r[key])
        # the total is NCE alone during the warm-up, NCE plus the weighted terms afterwards
        o = cfg.options
        weights = 0 if i < o.warmup_epochs else 1
        expected = r["nce"] + weights * (o.w_fns_audio * r["fns_audio"] + o.w_fns_visual * r["fns_visual"]
                                         + o.w_tne * r["tne"])
        assert r["loss"] == pytest.approx(expected, rel=1e-4)
    assert (smoke_run / "checkpoints" / "last.pt").is_file() and (smoke_run / "checkpoints" / "best.pt").is_file()
    assert not list((smoke_run / "checkpoints").glob("*.tmp"))
    summary = json.loads((smoke_run / "summary.json").read_text())
    best = max(records, key=lambda r: r["ap50"])
    assert summary["best_epoch"] == best["epoch"]


def test_evaluate_agrees_with_training_and_with_its_maps(smoke_run, tmp_path):
    fnac("evaluate", "--checkpoint", str(smoke_run / "checkpoints" / "best.pt"), "--out", str(tmp_path),
         "--save-maps", "--quiet")
    scores = json.loads((tmp_path / "scores.json").read_text())
    summary = json.loads((smoke_run / "summary.json").read_text())
    for k in ("ap50", "mean_ciou", "auc", "n_samples"):
        assert scores[k] == pytest.approx(summary["test"][k], abs=1e-12)
    assert set(scores["reference_maps"]) == {"centre_prior", "random", "oracle"}
    # recompute every per-sample cIoU from the saved maps with a plain numpy evaluator
    test_set = build_datasets(preset("smoke"))["test"]
    maps = np.load(tmp_path / "maps.npz")
    rows = list(csv.DictReader(open(tmp_path / "per_sample.csv")))
    assert len(rows) == scores["n_samples"] == len(test_set)
    values = []
    for i, row in enumerate(rows):
        assert row["id"] == test_set.ids[i] and int(row["class"]) == test_set.labels[i].item()
        m = maps[row["id"]].astype(np.float32)
        m = (m - m.min()) / (m.max() - m.min())
        thr = np.sort(m.flatten())[m.size // 2]
        region = (m >= thr).astype(float)
        gt = gt_map([vggss_box_to_pixels(test_set.boxes[i].tolist())]).numpy()
        expected = (region * gt).sum() / (gt.sum() + (region * (gt == 0)).sum())
        assert float(row["ciou"]) == pytest.approx(expected, abs=1e-6)
        values.append(expected)
    assert scores["ap50"] == pytest.approx(np.mean(np.array(values) >= 0.5), abs=1e-12)


def test_resume_is_exact(tmp_path):
    cfg = preset("smoke", **{**TINY, "warmup_epochs": 0})  # the FNAC terms in both epochs: the first run uses them
    datasets = build_datasets(cfg)
    straight = train(cfg, tmp_path / "a", progress=False, datasets=datasets)
    train(cfg.replace(epochs=1), tmp_path / "b", progress=False, datasets=datasets)
    resumed = train(cfg, tmp_path / "b", progress=False, datasets=datasets)
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "train_seconds"} for r in h]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)
    assert (tmp_path / "b" / "metrics.jsonl").read_text().count("\n") == 2


def test_resume_refuses_a_different_configuration(tmp_path):
    cfg = preset("smoke", **{**TINY, "epochs": 1}, **NCE_ONLY)
    train(cfg, tmp_path, progress=False)
    with pytest.raises(FnacError, match=r"last.pt: written with a different configuration \(lr\); use another --out, "
                                        r"or --no-resume to start afresh"):
        train(cfg.replace(lr=1e-2), tmp_path, progress=False)


@pytest.mark.parametrize("args,needle", [
    (["train", "--preset", "smoke", "--set", "lr=fast", "--out", "x"], "lr: expected float"),
    (["train", "--preset", "smoke", "--set", "colour=red", "--out", "x"], "unknown setting 'colour'"),
    (["train", "--preset", "smoke", "--set", "distance=cosine", "--out", "x"], "distance"),
    (["evaluate", "--checkpoint", "missing.pt", "--out", "x"], "missing.pt: checkpoint not found"),
])
def test_cli_errors_are_one_line(args, needle, tmp_path, capsys):
    assert main([str(tmp_path / "x") if a == "x" else a for a in args]) == 2  # the command, in this process
    stderr = capsys.readouterr().err
    assert needle in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_twins_share_their_warm_up_and_the_oracles_change_what_they_say(tmp_path):
    """Every variant of one seed shares the NCE twin's warm-up to the last digit, except the oracle NCE mask, which
    changes NCE itself from the first step. After the warm-up the oracle targets are what the loss follows."""
    base = preset("smoke", **TINY, class_bias_p=0.5)
    variants = {"nce": dict(w_fns_audio=0, w_fns_visual=0, w_tne=0), "fnac": {},
                "oracle_targets": dict(fn_targets="oracle"), "normalised": dict(normalise_targets=True, target_tau=0.3),
                "oracle_mask": dict(w_fns_audio=0, w_fns_visual=0, w_tne=0, nce_fn_mask="oracle")}
    datasets = build_datasets(base)
    runs = {name: train(base.replace(**v), tmp_path / name, datasets=datasets, progress=False).history
            for name, v in variants.items()}
    for name in ("fnac", "oracle_targets", "normalised"):
        assert runs[name][0]["nce"] == runs["nce"][0]["nce"], name  # bit-equal, not approximately
        assert runs[name][0]["ap50"] == runs["nce"][0]["ap50"], name
        assert runs[name][1]["loss"] != runs["nce"][1]["loss"], name
    assert runs["oracle_mask"][0]["nce"] < runs["nce"][0]["nce"]  # fewer negatives in every denominator
    # oracle targets: FNS-audio and FNS-visual compare the same class-label rows with the same logits
    assert runs["oracle_targets"][0]["fns_audio"] == pytest.approx(runs["oracle_targets"][0]["fns_visual"], rel=1e-6)
    assert runs["fnac"][0]["fns_audio"] != pytest.approx(runs["fnac"][0]["fns_visual"], rel=1e-3)


def test_resume_accepts_a_checkpoint_from_before_a_setting_existed(tmp_path):
    cfg = preset("smoke", **TINY, **NCE_ONLY)  # NCE alone: the one-epoch first run has no epoch after the warm-up
    train(cfg.replace(epochs=1), tmp_path, progress=False)
    last = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    record = state["config"]  # as an earlier version wrote it: FNAC's options flat, four of them not yet there
    flat = {k: v for k, v in record.items() if k not in ("method", "fnac")}
    flat.update({k: v for k, v in record["fnac"].items()
                 if k not in ("nce_fn_mask", "fn_targets", "normalise_targets", "target_tau")})
    state["config"] = flat
    torch.save(state, last)
    history = train(cfg, tmp_path, progress=False).history
    assert [r["epoch"] for r in history] == [1, 2]
