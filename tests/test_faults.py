"""Faults a person meets: a run killed (or out of disk space) between any two checkpoint writes resumes to the
uninterrupted result, and every user error is one line with a nonzero exit and no traceback."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import fnac_lab.ablate.runner
import fnac_lab.checkpoint
from fnac_lab.cli import main
from fnac_lab.config import preset
from fnac_lab.datasets import build_datasets
from fnac_lab.train import train
from isolated import run_isolated

REPO = Path(__file__).resolve().parents[1]
TINY = dict(n_train=32, n_val=16, n_test=16, batch_size=16, epochs=2, warmup_epochs=1, image_size=32, embed_dim=16,
            eval_batch_size=16)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


@pytest.fixture(scope="module")
def tiny():
    cfg = preset("smoke", **TINY)
    return cfg, build_datasets(cfg)


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    cfg, datasets = tiny
    out = tmp_path_factory.mktemp("straight")
    writes = []
    original = fnac_lab.checkpoint.atomic_torch_save

    def spy(obj, path):
        writes.append(path.name)
        original(obj, path)

    mp = pytest.MonkeyPatch()
    mp.setattr(fnac_lab.checkpoint, "atomic_torch_save", spy)
    try:
        train(cfg, out, progress=False, datasets=datasets)
    finally:
        mp.undo()
    return out, writes


def comparable(folder):
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("out_dir", None)
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("train_seconds", None)
    best = torch.load(folder / "checkpoints" / "best.pt", weights_only=True)
    return summary, lines, best


def test_the_uninterrupted_run_writes_an_improving_epoch_twice(uninterrupted):
    _, writes = uninterrupted
    assert writes.count("last.pt") == TINY["epochs"] and writes.count("best.pt") >= 1
    assert writes[:2] == ["last.pt", "best.pt"]  # the first epoch always improves on nothing


@pytest.mark.parametrize("fault", ["kill", "disk full"])
def test_a_fault_at_any_checkpoint_write_resumes_to_the_uninterrupted_result(uninterrupted, tiny, tmp_path, fault,
                                                                            monkeypatch):
    cfg, datasets = tiny
    straight, writes = uninterrupted
    expected_summary, expected_lines, expected_best = comparable(straight)
    original = fnac_lab.checkpoint.atomic_torch_save
    # a kill before each write; a full disk at the first improving epoch's best.pt (the state a real ENOSPC left)
    for k in range(len(writes)) if fault == "kill" else [1]:
        out = tmp_path / f"write{k}"
        calls = []

        def failing(obj, path):
            calls.append(path.name)
            if len(calls) == k + 1:
                if fault == "kill":
                    raise Killed(path)
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            original(obj, path)

        monkeypatch.setattr(fnac_lab.checkpoint, "atomic_torch_save", failing)
        with pytest.raises(Killed if fault == "kill" else OSError):
            train(cfg, out, progress=False, datasets=datasets)
        monkeypatch.setattr(fnac_lab.checkpoint, "atomic_torch_save", original)
        train(cfg, out, progress=False, datasets=datasets)  # the same command again, once space is back
        summary, lines, best = comparable(out)
        assert summary == expected_summary, f"fault at write {k} ({writes[k]})"
        assert lines == expected_lines, f"fault at write {k} ({writes[k]})"
        assert best["epoch"] == expected_best["epoch"]
        for name, value in expected_best["model"].items():
            assert torch.equal(best["model"][name], value), (k, name)


def one_line_error(capsys, argv, needle, code=2):
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_damaged_checkpoints_are_one_line(uninterrupted, tmp_path, capsys):
    straight, _ = uninterrupted
    for name, content in (("empty", b""), ("garbage", b"not a checkpoint at all"),
                          ("truncated", (straight / "checkpoints" / "last.pt").read_bytes()[:5000])):
        run = tmp_path / name
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.json").write_text((straight / "config.json").read_text())
        (run / "checkpoints" / "last.pt").write_bytes(content)
        one_line_error(capsys, ["train", "--preset", "smoke", "--out", run, "--quiet"],
                       f"{run / 'checkpoints' / 'last.pt'}: not a readable checkpoint")
    state = torch.load(straight / "checkpoints" / "best.pt", weights_only=True)
    state["config"]["embed_dim"] = 24  # a configuration that does not fit the weights
    torch.save(state, tmp_path / "mismatch.pt")
    one_line_error(capsys, ["evaluate", "--checkpoint", tmp_path / "mismatch.pt", "--out", tmp_path / "e"],
                   "mismatch.pt: its weights do not fit its configuration")


def test_an_out_that_is_a_file_is_one_line(uninterrupted, tmp_path, capsys):
    straight, _ = uninterrupted
    taken = tmp_path / "taken"
    taken.write_text("a file")
    needle = f"{taken}: exists and is not a folder"
    one_line_error(capsys, ["train", "--preset", "smoke", "--out", taken, "--quiet"], needle)
    one_line_error(capsys, ["evaluate", "--checkpoint", straight / "checkpoints" / "best.pt", "--out", taken,
                            "--quiet"], needle)
    (tmp_path / "videos").mkdir()
    one_line_error(capsys, ["prepare", "--videos", tmp_path / "videos", "--out", taken, "--quiet"], needle)
    one_line_error(capsys, ["prepare", "--videos", tmp_path / "videos", "--out", tmp_path / "p", "--sample-rate", "0"],
                   "--sample-rate 0: must be at least 1000 Hz")
    one_line_error(capsys, ["prepare", "--videos", tmp_path / "videos", "--out", tmp_path / "p", "--sample-rate", "-8"],
                   "--sample-rate -8: must be at least 1000 Hz")


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(fnac_lab.checkpoint, "atomic_torch_save", full)
    err = one_line_error(capsys, ["train", "--preset", "smoke", "--set", "epochs=1", "--set", "warmup_epochs=0",
                                  "--set", "n_train=64", "--set", "n_val=32", "--set", "n_test=32",
                                  "--out", tmp_path / "run", "--quiet"],
                         "No space left on device; free some space and rerun the same command to resume")
    assert "last.pt" in err


@pytest.mark.parametrize("command,target,argv", [
    ("train", "fnac_lab.train.train", ["train", "--preset", "smoke", "--out", "{tmp}/r"]),
    ("pretrain", "fnac_lab.pretrain.pretrain", ["pretrain", "--preset", "smoke", "--out", "{tmp}/p"]),
    ("evaluate", "fnac_lab.checkpoint.load_checkpoint", ["evaluate", "--checkpoint", "{tmp}/c.pt", "--out", "{tmp}/e"]),
    ("prepare", "fnac_lab.data.prepare.prepare_videos", ["prepare", "--videos", "{tmp}", "--out", "{tmp}/d"]),
    ("cache", "fnac_lab.data.cache.build_cache", ["cache", "--data-root", "{tmp}", "--out", "{tmp}/c"]),
    ("ablate", "fnac_lab.ablate.run_grid", ["ablate", str(REPO / "data/grids/fn_ratio.yaml"), "--out", "{tmp}/a"]),
])
def test_ctrl_c_in_every_command_is_one_line(command, target, argv, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    one_line_error(capsys, [a.format(tmp=tmp_path) for a in argv],
                   "fnac-lab: interrupted; rerun the same command to resume", code=130)


#: A grid whose second point is stopped by Ctrl-C, as a terminal delivers it, run by itself (ARGS: grid file, --out).
GRID_INTERRUPTED = """
import json, os, signal, sys, time

import fnac_lab.ablate.runner as runner

calls = []


def second_interrupted(grid, point, folder, **kwargs):
    calls.append(point.name)
    if len(calls) == 2:  # Ctrl-C while the second point runs: SIGINT reaches the main thread
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(2)
        return runner.PointOutcome(point=point, status="failed", folder=folder, error="interrupted")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / runner.METRICS).write_text(json.dumps({"ap50": 0.5}))
    (folder / runner.DONE).write_text(json.dumps({**grid.runs, "parameters": point.parameters}))
    return runner.PointOutcome(point=point, status="finished", folder=folder)


runner._run_point = second_interrupted
# a process started in the background of a script inherits SIGINT ignored; a terminal's Ctrl-C raises
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    runner.run_grid(sys.argv[1], sys.argv[2], jobs=1, progress=False)
except KeyboardInterrupt:
    sys.exit(0)
sys.exit("the grid went on after Ctrl-C")
"""


def test_ctrl_c_during_a_grid_keeps_the_finished_points_in_results(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"notebook: {REPO / 'notebooks' / '01_train.ipynb'}\nbase: {{smoke: true}}\ngrid: {{seed: [0, 1, 2]}}\n")
    proc = run_isolated(GRID_INTERRUPTED, grid, tmp_path / "out")  # its own process: the signal reaches only it
    assert proc.returncode == 0, proc.stderr
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(results["status"]) == ["finished", "not run", "not run"]
    assert results["ap50"].iloc[0] == 0.5
