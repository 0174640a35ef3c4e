"""Built-in pretraining of the visual stream: the file it writes, how runs load it, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch

from fnac_lab.config import pretrain_config_for, pretrain_preset, preset
from fnac_lab.data.builtin import BuiltinSpec, builtin_splits, object_images
from fnac_lab.pretrain import builtin_visual_weights, cached_pretrain_dir, pretrain
from fnac_lab.checkpoint import build_model


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    return pretrain(pretrain_preset("smoke", epochs=2), out, progress=False)


def test_files_and_metrics(pretrained):
    out = pretrained.out_dir
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_accuracy"] == lines[-1]["val_accuracy"] and summary["chance"] == 1 / 64
    # the accuracy is what the saved backbone and a fresh head classify (recomputed from last.pt's weights)
    state = torch.load(out / "last.pt", weights_only=True)
    from fnac_lab.pretrain import build_classifier
    model = build_classifier(pretrain_preset("smoke", epochs=2))
    model.load_state_dict(state["model"])
    model.eval()
    cfg = pretrain_preset("smoke", epochs=2)
    x, y = object_images("val", cfg.n_val, seed=cfg.seed, spec=BuiltinSpec(n_classes=64, image_size=cfg.image_size))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        pred = model((x.float() / 255 - mean) / std).argmax(dim=1)
    assert summary["val_accuracy"] == pytest.approx(float((pred == y).float().mean()), abs=1e-12)


def test_weights_load_into_a_plain_timm_backbone(pretrained):
    state = torch.load(pretrained.weights, weights_only=True)
    plain = timm.create_model("resnet18.tv_in1k", features_only=True, out_indices=(2,))
    plain.load_state_dict(state, strict=True)  # every key of timm's, no other
    assert set(state) == set(plain.state_dict())
    assert "conv1.weight" in state and "layer2.1.bn2.running_var" in state


def test_training_takes_the_file_key_for_key(pretrained):
    cfg = preset("smoke", visual_weights=str(pretrained.weights))
    model = build_model(cfg)
    state = torch.load(pretrained.weights, weights_only=True)
    for key, value in model.visual.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_object_images_are_disjoint_from_the_audio_visual_splits():
    spec = BuiltinSpec(n_classes=20, image_size=32)
    splits = builtin_splits(n_train=64, n_val=16, n_test=16, spec=spec)
    objects, labels = object_images("train", 64, spec=BuiltinSpec(n_classes=64, image_size=32))
    av = torch.cat([splits[k].images for k in ("train", "val", "test")]).flatten(1).float()
    nearest = torch.cdist(objects.flatten(1).float(), av).min(dim=1).values
    assert nearest.min() > 100  # no image (and no background) shared
    assert labels.min() >= 0 and labels.max() < 64 and len(set(labels.tolist())) > 30


def test_cached_pretraining_runs_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FNAC_LAB_CACHE", str(tmp_path))
    cfg = pretrain_config_for(preset("smoke", visual_pretrain="smoke")).replace(epochs=1, n_train=128, n_val=64)
    first = builtin_visual_weights(cfg, progress=False)
    assert first.parent == cached_pretrain_dir(cfg) and first.is_file()
    stamp = first.stat().st_mtime_ns
    assert builtin_visual_weights(cfg, progress=False) == first and first.stat().st_mtime_ns == stamp


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fnac_lab", *args], capture_output=True, text=True)


@pytest.mark.parametrize("content", ["text", "foreign", "cut"])
def test_bad_weights_file_is_one_line_naming_it(tmp_path, pretrained, content):
    path = tmp_path / "weights.pt"
    if content == "text":
        path.write_text("not a state dict")
    elif content == "foreign":
        torch.save({"encoder.weight": torch.zeros(3)}, path)
    else:  # a stage-2 file for a stage-3 model: layer3 is missing
        torch.save(torch.load(pretrained.weights, weights_only=True), path)
    stage = ["--set", "visual_stage=3"] if content == "cut" else []
    proc = run_cli("train", "--preset", "smoke", "--set", f"visual_weights={path}", *stage, "--out",
                   str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_pretrain_command(tmp_path):
    proc = run_cli("pretrain", "--preset", "smoke", "--set", "epochs=1", "--set", "n_train=128", "--set", "n_val=64",
                   "--out", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "validation accuracy" in proc.stdout and (tmp_path / "visual_backbone.pt").is_file()
    proc = run_cli("pretrain", "--preset", "smoke", "--set", "lr=inf", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "lr=inf" in proc.stderr


def test_result_does_not_depend_on_a_cached_pretraining(tmp_path):
    """The same command with the pretraining cache empty (it pretrains in-process first) and filled gives the same
    epochs: the pretraining does not move the random streams that initialise the rest of the model."""
    import os

    env = {**os.environ, "FNAC_LAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    args = ["train", "--preset", "smoke", "--set", "visual_pretrain=smoke", "--set", "epochs=1", "--set",
            "w_fns_audio=0", "--set", "w_fns_visual=0", "--set", "w_tne=0", "--quiet"]
    histories = []
    for name in ("empty", "filled"):
        proc = subprocess.run([sys.executable, "-m", "fnac_lab", *args, "--out", str(tmp_path / name)],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        histories.append([{k: v for k, v in r.items() if k != "train_seconds"} for r in lines])
    assert (tmp_path / "cache" / "pretrain").is_dir() and len(histories[0]) == 1
    assert histories[0] == histories[1]
