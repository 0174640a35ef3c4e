"""TensorBoard event files of training and pretraining runs, read back with tensorboard's EventAccumulator and checked
against the runs' metrics.jsonl; the switch that turns them off; resumed runs holding each epoch once."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import fnac_lab.checkpoint
import fnac_lab.pretrain
from fnac_lab.config import PretrainConfig, TrainConfig, pretrain_preset, preset
from fnac_lab.datasets import build_datasets
from fnac_lab.pretrain import RUNTIME_FIELDS as PRETRAIN_RUNTIME
from fnac_lab.pretrain import cached_pretrain_dir, pretrain
from fnac_lab.train import RUNTIME_FIELDS, train

TINY = dict(n_train=32, n_val=16, n_test=16, batch_size=16, epochs=2, warmup_epochs=1, image_size=32, embed_dim=16,
            eval_batch_size=16)
STEPS = TINY["n_train"] // TINY["batch_size"]  # optimisation steps per epoch
#: Fields that hold the time a run took: they differ between two runs of the same configuration.
TIMES = {"train_seconds", "step_seconds"}


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of ``folder/tensorboard`` by tag: its (step, value) pairs as TensorBoard reads them."""
    acc = EventAccumulator(str(folder / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl_scalars(folder: Path, *, lr: float, steps: int) -> dict[str, list[tuple[int, float]]]:
    """What the event files should hold by field name, read from ``folder/metrics.jsonl``: every number and boolean
    of each line at its epoch, the learning rate, and the training seconds per step."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        step = record["epoch"]
        values = {k: v for k, v in record.items() if k != "epoch" and isinstance(v, (int, float))}
        values.update(lr=lr, step_seconds=record["train_seconds"] / steps)
        for name, value in values.items():
            out.setdefault(name, []).append((step, float(value)))
    return out


def by_field(scalars: dict[str, list[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
    names = [tag.rpartition("/")[2] for tag in scalars]
    assert len(set(names)) == len(names), names
    return {tag.rpartition("/")[2]: values for tag, values in scalars.items()}


def assert_events_match_jsonl(folder: Path, *, lr: float, steps: int) -> dict[str, list[tuple[int, float]]]:
    events, expected = by_field(event_scalars(folder)), jsonl_scalars(folder, lr=lr, steps=steps)
    assert set(events) == set(expected)
    for name, values in expected.items():
        assert [s for s, _ in events[name]] == [s for s, _ in values], name  # each epoch once, in order
        # event files hold 32-bit floats
        assert [v for _, v in events[name]] == pytest.approx([v for _, v in values], rel=1e-6, abs=1e-12), name
    return events


@pytest.fixture(scope="module")
def tiny():
    cfg = preset("smoke", **TINY)
    return cfg, build_datasets(cfg)


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory) -> Path:
    cfg, datasets = tiny
    out = tmp_path_factory.mktemp("straight")
    train(cfg, out, progress=False, datasets=datasets)
    return out


def test_every_field_of_metrics_jsonl_is_a_scalar_at_its_epoch(uninterrupted, tiny):
    cfg, _ = tiny
    events = assert_events_match_jsonl(uninterrupted, lr=cfg.lr, steps=STEPS)
    assert {"ap50", "mean_ciou", "auc", "nce", "fns_audio", "fns_visual", "tne", "loss", "fn_ratio", "fn_auroc_audio",
            "fn_auroc_visual", "lr", "step_seconds"} <= set(events)
    assert [v for _, v in events["fnac_active"]] == [0.0, 1.0]  # the warm-up epoch, then FNAC's terms
    tags = set(event_scalars(uninterrupted))
    assert {"validation/ap50", "loss/nce", "loss/loss", "false_negatives/fn_ratio", "false_negatives/fn_auroc_audio",
            "optimiser/lr", "optimiser/step_seconds"} <= tags
    assert len(list((uninterrupted / "tensorboard").iterdir())) == 1


def test_switched_off_no_event_files_and_the_same_metrics(uninterrupted, tiny, tmp_path, capsys):
    cfg, datasets = tiny
    out = tmp_path / "off"
    shutil.copytree(uninterrupted, out)  # an earlier run's files, event files among them
    train(cfg.replace(tensorboard=False), out, progress=False, datasets=datasets, resume=False)
    assert "events.out.tfevents" in capsys.readouterr().err  # named among the earlier run's files removed
    assert not list((out / "tensorboard").glob("events.out.tfevents.*"))
    strip = lambda folder: [{k: v for k, v in json.loads(line).items() if k not in TIMES}  # noqa: E731
                            for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert strip(out) == strip(uninterrupted)  # writing the event files changes nothing the run computes
    assert json.loads((out / "config.json").read_text())["tensorboard"] is False
    assert "tensorboard" not in json.loads((uninterrupted / "config.json").read_text())  # recorded only when set


def test_a_killed_and_resumed_run_holds_each_epoch_once(uninterrupted, tiny, tmp_path, monkeypatch):
    cfg, datasets = tiny
    original = fnac_lab.checkpoint.atomic_torch_save
    writes = []

    def killed_at_the_second_epoch(obj, path):
        writes.append(path.name)
        if writes.count("last.pt") == 2:
            raise Killed(path)
        original(obj, path)

    monkeypatch.setattr(fnac_lab.checkpoint, "atomic_torch_save", killed_at_the_second_epoch)
    with pytest.raises(Killed):
        train(cfg, tmp_path, progress=False, datasets=datasets)
    monkeypatch.setattr(fnac_lab.checkpoint, "atomic_torch_save", original)
    assert {s for values in event_scalars(tmp_path).values() for s, _ in values} == {1}
    train(cfg, tmp_path, progress=False, datasets=datasets)
    resumed = assert_events_match_jsonl(tmp_path, lr=cfg.lr, steps=STEPS)
    straight = by_field(event_scalars(uninterrupted))
    assert {k: v for k, v in resumed.items() if k not in TIMES} == {k: v for k, v in straight.items() if k not in TIMES}
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1


def test_a_killed_and_resumed_pretraining_holds_each_epoch_once(tmp_path, monkeypatch):
    cfg = pretrain_preset("smoke", n_train=128, n_val=32, batch_size=64, epochs=2)
    original, writes = fnac_lab.pretrain.atomic_torch_save, []

    def killed_at_the_second_epoch(obj, path):
        writes.append(path.name)
        if len(writes) == 2:
            raise Killed(path)
        original(obj, path)

    monkeypatch.setattr(fnac_lab.pretrain, "atomic_torch_save", killed_at_the_second_epoch)
    with pytest.raises(Killed):
        pretrain(cfg, tmp_path, progress=False)
    monkeypatch.setattr(fnac_lab.pretrain, "atomic_torch_save", original)
    pretrain(cfg, tmp_path, progress=False)
    events = assert_events_match_jsonl(tmp_path, lr=cfg.lr, steps=cfg.n_train // cfg.batch_size)
    assert set(events) == {"train_loss", "train_accuracy", "val_accuracy", "train_seconds", "lr", "step_seconds"}
    assert {"loss/train_loss", "accuracy/val_accuracy"} <= set(event_scalars(tmp_path))
    off = tmp_path / "off"
    pretrain(cfg.replace(tensorboard=False), off, progress=False)
    assert not (off / "tensorboard").exists()


def test_records_from_before_the_switch_existed_load_and_resume(tmp_path):
    record = preset("smoke").to_dict()
    assert "tensorboard" not in record
    assert TrainConfig.from_dict(record).tensorboard is True
    preset("smoke", tensorboard=False).check_resumable(record, source=tmp_path, runtime=RUNTIME_FIELDS)
    cfg = pretrain_preset("smoke")
    old_record = {k: v for k, v in cfg.to_dict().items() if k != "tensorboard"}
    assert PretrainConfig.from_dict(old_record) == cfg
    cfg.replace(tensorboard=False).check_resumable(old_record, source=tmp_path, runtime=PRETRAIN_RUNTIME)
    # the cache of a pretraining keeps its name: a hash of the settings it had before, the device left out
    digest = hashlib.sha1(json.dumps({k: v for k, v in old_record.items() if k != "device"},
                                     sort_keys=True).encode()).hexdigest()[:12]
    for switch in (True, False):
        assert cached_pretrain_dir(cfg.replace(tensorboard=switch)).name.endswith(digest)
