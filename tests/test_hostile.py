"""Hostile input through the command line, as a user meets it (``python -m fnac_lab ...`` in a subprocess): two
runs into one folder, a killed run, unknown backbones, broken results files, empty or impossible arguments,
duplicate grid values, SIGTERM and a far too small temperature. Each refusal is one line on stderr, without a
traceback, and leaves what an earlier run wrote as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

import fnac_lab.ablate
import fnac_lab.ablate.grid as grid_module
import fnac_lab.checkpoint
import fnac_lab.data.cache
import fnac_lab.data.prepare
import fnac_lab.pretrain
import fnac_lab.train
from fnac_lab.ablate import bundled_grid, point_name
from fnac_lab.cli import main
from fnac_lab.utils import LOCK_FILE, folder_lock

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
#: A tiny smoke run: a couple of seconds per epoch on one core.
TINY = ["--preset", "smoke", "--set", "n_train=64", "--set", "n_val=32", "--set", "n_test=32", "--quiet"]
INTERRUPTED = "fnac-lab: interrupted; rerun the same command to resume"


def fnac(*args, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fnac_lab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=timeout)


def start(*args, stderr) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fnac_lab", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=stderr, env=ENV)


def one_line(proc: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """The single stderr line of a finished command with exit ``code``, checked to hold every needle."""
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wait_for(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def lock_names(folder: Path, pid: int) -> bool:
    lock = folder / LOCK_FILE
    return lock.is_file() and lock.read_text().startswith(f"pid {pid} ")


# -- one run per output folder -------------------------------------------------------------------------------------

def test_a_second_train_into_the_same_folder_is_refused_and_sigterm_stops_the_first(tmp_path):
    out = tmp_path / "run"
    with open(tmp_path / "first.err", "w") as err:
        first = start("train", *TINY, "--set", "seed=0", "--set", "epochs=40", "--out", out, stderr=err)
        try:
            wait_for(lambda: lock_names(out, first.pid) and (out / "config.json").is_file(), "the first run's lock")
            first.send_signal(signal.SIGSTOP)  # the first run holds still: its folder can be compared byte by byte
            before = snapshot(out)
            second = fnac("train", *TINY, "--set", "seed=1", "--out", out)
            one_line(second, str(out), f"pid {first.pid} on ", "another run is writing into this folder")
            assert snapshot(out) == before
            assert json.loads((out / "config.json").read_text())["seed"] == 0
            first.send_signal(signal.SIGTERM)
            first.send_signal(signal.SIGCONT)
            assert first.wait(timeout=120) == 143
        finally:
            first.kill()
    assert (tmp_path / "first.err").read_text().strip() == INTERRUPTED
    assert not (out / LOCK_FILE).exists()  # stopped like Ctrl-C: the lock is released and its file removed


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory):
    """A run killed with SIGKILL while it holds its lock, then the same command again (with fewer epochs)."""
    out = tmp_path_factory.mktemp("killed") / "run"
    run = start("train", *TINY, "--set", "epochs=40", "--out", out, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: lock_names(out, run.pid), "the run's lock")
    finally:
        run.kill()
        run.wait()
    left_behind = (out / LOCK_FILE).is_file()
    rerun = fnac("train", *TINY, "--set", "epochs=2", "--out", out)
    return out, left_behind, rerun


def test_a_killed_run_does_not_block_the_rerun(killed_and_rerun):
    out, left_behind, rerun = killed_and_rerun
    assert left_behind  # the file stays behind a killed run; the system released its lock
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "summary.json").is_file() and not (out / LOCK_FILE).exists()


def test_train_resumes_in_the_same_process_after_a_finished_run(tmp_path):
    from fnac_lab.config import preset

    cfg = preset("smoke", n_train=64, n_val=32, n_test=32, epochs=2)
    first = fnac_lab.train.train(cfg, tmp_path, progress=False)
    again = fnac_lab.train.train(cfg, tmp_path, progress=False)  # finished: nothing left to train, same summary
    assert again.summary == first.summary and not (tmp_path / LOCK_FILE).exists()


@pytest.fixture(scope="module")
def sleeper(tmp_path_factory) -> Path:
    """A notebook for grids: writes ``started`` (its kernel's pid), sleeps ``sleep`` seconds, writes metrics.json."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seed = 0\nsleep = 0\nout_dir = None")
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import json, os, pathlib, time\nout = pathlib.Path(out_dir)\n(out / 'started').write_text(str(os.getpid()))\n"
        "time.sleep(sleep)\n(out / 'metrics.json').write_text(json.dumps({'seed': seed, 'ap50': 0.5}))")
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path_factory.mktemp("notebook") / "sleeper.ipynb"
    nbformat.write(nb, path)
    return path


def write_grid(path: Path, notebook: Path, grid: dict, base: dict | None = None) -> Path:
    path.write_text(yaml.safe_dump({"notebook": str(notebook), "base": base or {}, "grid": grid}))
    return path


@pytest.mark.parametrize("command", ["evaluate", "pretrain", "ablate"])
def test_every_writing_command_refuses_a_locked_folder(command, killed_and_rerun, sleeper, tmp_path):
    run, _, _ = killed_and_rerun
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.json").write_text('{"earlier": true}\n')  # what an earlier run left there
    argv = {"evaluate": ["evaluate", "--checkpoint", run / "checkpoints" / "best.pt", "--out", out, "--quiet"],
            "pretrain": ["pretrain", "--preset", "smoke", "--out", out, "--quiet"],
            "ablate": ["ablate", write_grid(tmp_path / "grid.yaml", sleeper, {"seed": [0]}), "--out", out, "--quiet"]}
    before = snapshot(out)
    with folder_lock(out):  # this process stands for the running one
        proc = fnac(*argv[command])
    one_line(proc, str(out), f"pid {os.getpid()} on ")
    assert snapshot(out) == before


# -- settings, arguments and files refused with one line -----------------------------------------------------------

@pytest.mark.parametrize("command,setting,needles", [
    ("train", "visual_backbone=foo", ["visual_backbone='foo': not a timm model"]),
    ("train", "audio_backbone=resnet19", ["audio_backbone='resnet19'", "did you mean 'resnet18'"]),
    ("pretrain", "visual_backbone=resnet18.foo", ["visual_backbone='resnet18.foo'", "no pretrained tag 'foo'",
                                                  "tv_in1k"]),
])
def test_unknown_backbones_are_refused_when_the_configuration_is_built(command, setting, needles, tmp_path):
    proc = fnac(command, "--preset", "smoke", "--set", setting, "--out", tmp_path / "out")
    one_line(proc, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,content,needle", [
    ("empty.csv", b"", "is empty"),
    ("garbage.csv", b'a,b\n1,2,3,4\n5,"6\n', "not a readable csv (ParserError"),
    ("binary.csv", bytes(range(256)) * 4, "not a readable csv"),
    ("columns.csv", b"seed,ap50\n0,0.5\n", "no fnac_strength column"),
    ("strength.csv", b"fnac_strength,seed,ap50\nhigh,0,0.5\n", "column fnac_strength holds a value that is not a"),
    ("folder", None, "is a folder"),
])
def test_effects_refuses_bad_results_files(name, content, needle, tmp_path):
    path = tmp_path / name
    path.mkdir() if content is None else path.write_bytes(content)
    one_line(fnac("effects", path), str(path), needle)


def test_an_empty_out_is_refused(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    one_line(fnac("train", *TINY, "--out", "", cwd=cwd), "--out is empty")
    assert list(cwd.iterdir()) == []  # nothing written into the current folder


def test_evaluate_refuses_a_batch_size_below_one(killed_and_rerun, tmp_path):
    run, _, _ = killed_and_rerun
    one_line(fnac("evaluate", "--checkpoint", run / "checkpoints" / "best.pt", "--out", tmp_path / "e",
                  "--batch-size", "0"), "--batch-size 0: must be a positive integer")
    assert not (tmp_path / "e").exists()


def test_fnac_weights_without_an_epoch_after_the_warm_up_are_refused_before_any_work(tmp_path):
    proc = fnac("train", *TINY, "--set", "epochs=1", "--out", tmp_path / "run")  # smoke: warm-up 1, FNAC weights 10
    one_line(proc, "warmup_epochs=1 with epochs=1", "would never be used")
    assert not (tmp_path / "run").exists()


def test_a_tiny_temperature_trains_with_one_warning(tmp_path):
    proc = fnac("train", *TINY, "--set", "tau=1e-6", "--set", "epochs=1", "--set", "w_fns_audio=0", "--set",
                "w_fns_visual=0", "--set", "w_tne=0", "--out", tmp_path / "run")
    line = one_line(proc, "fnac-lab: warning: tau=1e-06 is far below the published 0.03", code=0)
    assert line.count("warning") == 1 and (tmp_path / "run" / "summary.json").is_file()


# -- grids ---------------------------------------------------------------------------------------------------------

def test_values_of_one_setting_in_two_spellings_are_one_point(sleeper, tmp_path):
    grid = write_grid(tmp_path / "grid.yaml", sleeper, {"seed": [1, "1", 1.0]})
    proc = fnac("ablate", grid, "--out", tmp_path / "out", "--quiet")
    assert proc.returncode == 0, proc.stderr
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 1 and results["seed"].tolist() == [1] and results["status"].tolist() == ["finished"]
    assert len(list((tmp_path / "out" / "points").iterdir())) == 1


def test_a_grid_value_that_does_not_fit_its_setting_is_one_line(sleeper, tmp_path):
    grid = write_grid(tmp_path / "grid.yaml", sleeper, {"seed": [0, "zero"]})
    one_line(fnac("ablate", grid, "--out", tmp_path / "out"), str(grid), "axis 'seed'", "expected int, got 'zero'")
    assert not (tmp_path / "out").exists()


def raw_point_names(path: Path) -> list[str]:
    """Point names of a grid file computed from its values exactly as written, each name once (file order)."""
    import itertools
    from collections.abc import Mapping

    spec = yaml.safe_load(path.read_text())
    blocks = spec["grid"] if isinstance(spec["grid"], list) else [spec["grid"]]
    names = []
    for block in blocks:
        for combo in itertools.product(*block.values()):
            values = dict(zip(block, combo))
            params = dict(spec.get("base") or {})
            for value in combo:
                if isinstance(value, Mapping):
                    params.update(value)
            params.update({k: v for k, v in values.items() if not isinstance(v, Mapping)})
            name = point_name(values, params)
            if name not in names:
                names.append(name)
    return names


@pytest.mark.parametrize("path", sorted((REPO / "data" / "grids").glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_grids_keep_their_point_names(path):
    """A running grid resumes by its points' names: converting values must leave every bundled grid's names."""
    assert [p.name for p in bundled_grid(path.stem).points()] == raw_point_names(path)


def test_settings_agree_across_spellings():
    key = grid_module.settings_key
    assert key({"class_bias_p": 0}) == key({"class_bias_p": 0.0}) == key({"class_bias_p": "0"})
    assert key({"tne_threshold": "soft"}) == key({"tne_threshold": None})
    assert key({"audio_augment": True}) == key({"audio_augment": "per_axis"})
    assert key({"seed": 1}) != key({"seed": 2}) and key({"smoke": "1"}) != key({"smoke": 1})  # not a setting
    assert grid_module.canonical_value("class_bias_p", 0) == 0 and type(grid_module.canonical_value("w_tne", 0)) is int
    assert grid_module.canonical_value("tne_threshold", "soft") == "soft"
    assert grid_module.canonical_value("batch_size", 64.0) == 64 and grid_module.canonical_value("lr", "1e-3") == 1e-3


# -- SIGTERM -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module,name,argv", [
    (fnac_lab.train, "train", ["train", "--preset", "smoke", "--out", "{tmp}/r"]),
    (fnac_lab.pretrain, "pretrain", ["pretrain", "--preset", "smoke", "--out", "{tmp}/p"]),
    (fnac_lab.checkpoint, "load_checkpoint", ["evaluate", "--checkpoint", "{tmp}/c.pt", "--out", "{tmp}/e"]),
    (fnac_lab.data.prepare, "prepare_videos", ["prepare", "--videos", "{tmp}", "--out", "{tmp}/d"]),
    (fnac_lab.data.cache, "build_cache", ["cache", "--data-root", "{tmp}", "--out", "{tmp}/c"]),
    (fnac_lab.ablate, "run_grid", ["ablate", str(REPO / "data/grids/fn_ratio.yaml"), "--out", "{tmp}/a"]),
], ids=["train", "pretrain", "evaluate", "prepare", "cache", "ablate"])
def test_sigterm_in_every_command_is_one_line(module, name, argv, tmp_path, capsys, monkeypatch):
    """The signal itself, sent to this process while the command works: the same line as Ctrl-C, exit 143."""

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(module, name, terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main([a.format(tmp=tmp_path) for a in argv]) == 143
    err = capsys.readouterr().err
    assert err.strip() == INTERRUPTED
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler is gone again


def test_sigterm_stops_a_grid_and_its_running_kernel(sleeper, tmp_path):
    grid = write_grid(tmp_path / "grid.yaml", sleeper, {"seed": [0, 1]}, base={"sleep": 300})
    out = tmp_path / "out"
    with open(tmp_path / "ablate.err", "w") as err:
        run = start("ablate", grid, "--out", out, "--quiet", stderr=err)
        try:
            wait_for(lambda: any(out.glob("points/*/started")), "the first point's kernel")
            kernel = int(next(out.glob("points/*/started")).read_text())
            run.send_signal(signal.SIGTERM)
            assert run.wait(timeout=120) == 143
        finally:
            run.kill()
    assert (tmp_path / "ablate.err").read_text().strip() == INTERRUPTED
    wait_for(lambda: not Path(f"/proc/{kernel}").exists(), "the kernel to stop", timeout=30)
    results = pd.read_csv(out / "results.csv")  # written on the way out; neither point finished
    assert results["status"].tolist() == ["not run", "not run"] and not (out / LOCK_FILE).exists()
    assert len(list(out.glob("points/*/error.txt"))) == 1  # the stopped point says why
