"""Hostile input through the command line, as a user meets it: two runs into one folder, a killed run, unknown
backbones, broken results files, empty or impossible arguments, duplicate grid values, SIGTERM, a far too small
temperature, files that would run code when loaded, result folders used twice, alias bombs, papermill's text
booleans, memory running out and ids with odd characters. Each refusal is one line on stderr, without a traceback,
and leaves what an earlier run wrote as it was. Commands that signal, lock or get killed run as processes of their
own (``python -m fnac_lab``); refusals that come before any heavy work call the same ``main`` in the test's process."""

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
import papermill
import pytest
import yaml

import fnac_lab.ablate
import fnac_lab.ablate.grid as grid_module
import fnac_lab.checkpoint
import fnac_lab.config
import fnac_lab.data.cache
import fnac_lab.data.prepare
import fnac_lab.pretrain
import fnac_lab.train
from fnac_lab.ablate import bundled_grid, point_name
from fnac_lab.cli import main
from fnac_lab.papermill_engine import ENGINE_NAME
from fnac_lab.utils import LOCK_FILE, folder_lock
from isolated import run_isolated

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


def refused(capsys, *argv, needles: tuple[str, ...], code: int = 2) -> str:
    """The single stderr line of the command line run in this process (for refusals that come before any heavy
    work: no interpreter start to wait for), checked as :func:`one_line` checks a subprocess's."""
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    return one_line(subprocess.CompletedProcess(argv, code, "", err), *needles, code=code)


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
def test_unknown_backbones_are_refused_when_the_configuration_is_built(command, setting, needles, tmp_path, capsys):
    refused(capsys, command, "--preset", "smoke", "--set", setting, "--out", tmp_path / "out", needles=tuple(needles))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,content,needle", [
    ("empty.csv", b"", "is empty"),
    ("garbage.csv", b'a,b\n1,2,3,4\n5,"6\n', "not a readable csv (ParserError"),
    ("binary.csv", bytes(range(256)) * 4, "not a readable csv"),
    ("columns.csv", b"seed,ap50\n0,0.5\n", "no fnac_strength column"),
    ("strength.csv", b"fnac_strength,seed,ap50\nhigh,0,0.5\n", "column fnac_strength holds a value that is not a"),
    ("folder", None, "is a folder"),
])
def test_effects_refuses_bad_results_files(name, content, needle, tmp_path, capsys):
    path = tmp_path / name
    path.mkdir() if content is None else path.write_bytes(content)
    refused(capsys, "effects", path, needles=(str(path), needle))


def test_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    refused(capsys, "train", *TINY, "--out", "", needles=("--out is empty",))
    assert list(cwd.iterdir()) == []  # nothing written into the current folder


def test_evaluate_refuses_a_batch_size_below_one(killed_and_rerun, tmp_path, capsys):
    run, _, _ = killed_and_rerun
    refused(capsys, "evaluate", "--checkpoint", run / "checkpoints" / "best.pt", "--out", tmp_path / "e",
            "--batch-size", "0", needles=("--batch-size 0: must be a positive integer",))
    assert not (tmp_path / "e").exists()


def test_fnac_weights_without_an_epoch_after_the_warm_up_are_refused_before_any_work(tmp_path, capsys):
    refused(capsys, "train", *TINY, "--set", "epochs=1", "--out", tmp_path / "run",  # smoke: warm-up 1, weights 10
            needles=("warmup_epochs=1 with epochs=1", "would never be used"))
    assert not (tmp_path / "run").exists()


def test_a_tiny_temperature_trains_with_one_warning(tmp_path):
    proc = fnac("train", *TINY, "--set", "tau=1e-6", "--set", "epochs=1", "--set", "w_fns_audio=0", "--set",
                "w_fns_visual=0", "--set", "w_tne=0", "--out", tmp_path / "run")
    line = one_line(proc, "fnac-lab: warning: tau=1e-06 is far below the published 0.03", code=0)
    assert line.count("warning") == 1 and (tmp_path / "run" / "summary.json").is_file()


# -- grids ---------------------------------------------------------------------------------------------------------

def test_values_of_one_setting_in_two_spellings_are_one_point(sleeper, tmp_path):
    grid = write_grid(tmp_path / "grid.yaml", sleeper, {"seed": [1, "1", 1.0]})
    assert main(["ablate", str(grid), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 1 and results["seed"].tolist() == [1] and results["status"].tolist() == ["finished"]
    assert len(list((tmp_path / "out" / "points").iterdir())) == 1


def test_a_grid_value_that_does_not_fit_its_setting_is_one_line(sleeper, tmp_path, capsys):
    grid = write_grid(tmp_path / "grid.yaml", sleeper, {"seed": [0, "zero"]})
    refused(capsys, "ablate", grid, "--out", tmp_path / "out",
            needles=(str(grid), "axis 'seed'", "expected int, got 'zero'"))
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

#: Commands whose work (``module.name``) is replaced by sending SIGTERM to their own process, run one after another
#: in a process of their own (ARGS: a JSON list of [module, name, argv]); prints each one's exit code and stderr.
SIGTERM_INSIDE = """
import contextlib, importlib, io, json, os, signal, sys, time

from fnac_lab.cli import main


def terminated(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the handler raises before this ends
    raise AssertionError("SIGTERM did not stop the command")


results = []
for module, name, argv in json.loads(sys.argv[1]):
    module = importlib.import_module(module)
    work, before, err = getattr(module, name), signal.getsignal(signal.SIGTERM), io.StringIO()
    setattr(module, name, terminated)
    with contextlib.redirect_stderr(err):
        code = main(argv)
    setattr(module, name, work)
    results.append({"code": code, "stderr": err.getvalue(), "restored": signal.getsignal(signal.SIGTERM) is before})
print(json.dumps(results))
"""
SIGTERM_COMMANDS = {
    "train": ("fnac_lab.train", "train", ["train", "--preset", "smoke", "--out", "{tmp}/r"]),
    "pretrain": ("fnac_lab.pretrain", "pretrain", ["pretrain", "--preset", "smoke", "--out", "{tmp}/p"]),
    "evaluate": ("fnac_lab.checkpoint", "load_checkpoint", ["evaluate", "--checkpoint", "{tmp}/c.pt", "--out", "{tmp}/e"]),
    "prepare": ("fnac_lab.data.prepare", "prepare_videos", ["prepare", "--videos", "{tmp}", "--out", "{tmp}/d"]),
    "cache": ("fnac_lab.data.cache", "build_cache", ["cache", "--data-root", "{tmp}", "--out", "{tmp}/c"]),
    "ablate": ("fnac_lab.ablate", "run_grid", ["ablate", str(REPO / "data/grids/fn_ratio.yaml"), "--out", "{tmp}/a"]),
}


@pytest.fixture(scope="module")
def sigterm_inside(tmp_path_factory) -> dict[str, dict]:
    """Every command of :data:`SIGTERM_COMMANDS` stopped by SIGTERM in one process (and session) of its own, so that
    the signal reaches nothing else; each one's exit code, stderr and whether its handler was removed again."""
    tmp = tmp_path_factory.mktemp("sigterm")
    cases = [[module, name, [a.format(tmp=tmp) for a in argv]] for module, name, argv in SIGTERM_COMMANDS.values()]
    proc = run_isolated(SIGTERM_INSIDE, json.dumps(cases))
    assert proc.returncode == 0, proc.stderr
    return dict(zip(SIGTERM_COMMANDS, json.loads(proc.stdout.strip().splitlines()[-1])))


@pytest.mark.parametrize("command", sorted(SIGTERM_COMMANDS))
def test_sigterm_in_every_command_is_one_line(command, sigterm_inside):
    """The signal itself, sent to the command's process while the command works: the same line as Ctrl-C, exit 143,
    and the command's handler is gone again afterwards."""
    result = sigterm_inside[command]
    assert result["code"] == 143, result["stderr"]
    assert result["stderr"].strip() == INTERRUPTED and result["restored"]


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


# -- files that would run code when loaded -------------------------------------------------------------------------

class RunsACommand:
    """Pickled as a call of ``os.system``: what a malicious checkpoint holds. Loading it unsafely runs the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_file(path: Path, marker: Path, *, raw: bool = False) -> Path:
    """A checkpoint-shaped file whose weights are the command above; ``raw``: a plain pickle, not torch's zip."""
    import pickle

    import torch

    state = {"config": {}, "epoch": 0, "model": RunsACommand(marker), "history": [], "best": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw:
        path.write_bytes(pickle.dumps(state, protocol=2))
    else:
        torch.save(state, path)
    return path


def test_the_malicious_file_runs_its_command_when_loaded_unsafely(tmp_path):
    """The payload the load-path tests below use is live: the unsafe loader these paths used to call runs it."""
    marker = tmp_path / "ran"
    evil = malicious_file(tmp_path / "evil.pt", marker)
    code = f"import torch; torch.load({str(evil)!r}, weights_only=False)"  # deliberately unsafe: the attack
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert marker.is_file()


def results_for_extended(folder: Path, csv: Path) -> Path:
    """A diagnosis results.csv whose one finished run lives in ``folder`` (its ``fnac/checkpoints/best.pt``)."""
    pd.DataFrame([dict(class_bias_p=0.0, seed=0, w_fns_audio=0.0, w_fns_visual=0.0, w_tne=0.0, ap50=0.5,
                       warmup_nce=0.0, status="finished", folder=str(folder))]).to_csv(csv, index=False)
    return csv


#: Every command that loads a torch file, with the file it loads (``{evil}``) and where that file lies.
LOAD_PATHS = {
    "evaluate": ("{tmp}/evil.pt", ["evaluate", "--checkpoint", "{tmp}/evil.pt", "--out", "{tmp}/e"]),
    "evaluate_raw_pickle": ("{tmp}/evil.pkl", ["evaluate", "--checkpoint", "{tmp}/evil.pkl", "--out", "{tmp}/e"]),
    "evaluate_real_set": ("{tmp}/evil.pt", ["evaluate", "--checkpoint", "{tmp}/evil.pt", "--testset", "flickr",
                                            "--data-root", "{tmp}", "--annotations", "{tmp}", "--out", "{tmp}/e"]),
    "train_resume": ("{tmp}/run/checkpoints/last.pt", ["train", *TINY, "--out", "{tmp}/run"]),
    "train_visual_weights": ("{tmp}/evil.pt", ["train", *TINY, "--set", "visual_weights={tmp}/evil.pt",
                                               "--out", "{tmp}/run"]),
    "pretrain_resume": ("{tmp}/p/last.pt", ["pretrain", "--preset", "smoke", "--out", "{tmp}/p", "--quiet"]),
    "diagnosis_extended": ("{tmp}/point/fnac/checkpoints/best.pt",
                           ["diagnosis", "{tmp}/results.csv", "--extended", "0.5", "--quiet"]),
}


@pytest.mark.parametrize("case", sorted(LOAD_PATHS))
def test_no_load_path_runs_code_from_a_file(case, tmp_path, capsys):
    where, argv = LOAD_PATHS[case]
    marker = tmp_path / "ran"
    evil = Path(where.format(tmp=tmp_path))
    malicious_file(evil, marker, raw=evil.suffix == ".pkl")
    results_for_extended(tmp_path / "point", tmp_path / "results.csv")
    before = evil.read_bytes()
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert not marker.exists(), "the file's command ran"
    one_line(subprocess.CompletedProcess(argv, 2, "", capsys.readouterr().err), str(evil),
             "refused: it names posix.system")
    assert evil.read_bytes() == before  # refused, not repaired over


def test_the_notebooks_loaders_run_no_code_from_a_file(tmp_path):
    """Notebook 05 with ``-p checkpoint`` (papermill, as a user runs it) and the loader behind 03-05."""
    from fnac_lab.analysis import load_or_train_model_pair
    from fnac_lab.utils import UnsafeFileError

    marker = tmp_path / "ran"
    evil = malicious_file(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeFileError, match="refused: it names posix.system"):
        load_or_train_model_pair(checkpoint=evil, smoke=True)
    proc = papermill_cli("05_localisation_maps.ipynb", tmp_path, "-p", "smoke", "true", "-p", "checkpoint", str(evil))
    assert proc.returncode != 0 and proc.stderr.startswith(f"UnsafeFileError: {evil}: refused: it names posix.system")
    assert not marker.exists()


def test_ogl_weights_run_no_code_from_a_file(tmp_path):
    """``evaluate --ogl-weights``: timm loads the object network's file, also as data only."""
    from fnac_lab.ogl import OGLWeightsError, load_object_network

    marker = tmp_path / "ran"
    evil = malicious_file(tmp_path / "evil.pt", marker)
    with pytest.raises(OGLWeightsError) as refused:
        load_object_network(evil)
    assert str(evil) in str(refused.value) and "posix.system" in str(refused.value)
    assert "\n" not in str(refused.value) and not marker.exists()


def test_written_files_hold_only_what_the_safe_loader_reads(killed_and_rerun, tmp_path, capsys):
    """Every torch file a run or a pretraining writes names no Python object to call."""
    import torch

    run, _, _ = killed_and_rerun
    assert main(["pretrain", "--preset", "smoke", "--set", "n_train=128", "--set", "epochs=1", "--out",
                 str(tmp_path / "p"), "--quiet"]) == 0
    files = [*sorted((run / "checkpoints").glob("*.pt")), tmp_path / "p" / "last.pt", tmp_path / "p" / "visual_backbone.pt"]
    assert len(files) == 4
    for path in files:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path


# -- result sets that cannot go stale ------------------------------------------------------------------------------

def test_a_built_in_evaluate_after_another_leaves_none_of_the_first_ones_files(killed_and_rerun, tmp_path, capsys):
    run, _, _ = killed_and_rerun
    out = tmp_path / "e"
    assert main(["evaluate", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--set", "test_negatives=0.5",
                 "--save-maps", "--out", str(out), "--quiet"]) == 0
    assert {"maps.npz", "negatives.csv", "maps_negatives.npz"} <= {p.name for p in out.iterdir()}
    assert main(["evaluate", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["per_sample.csv", "scores.json"]
    assert json.loads((out / "scores.json").read_text())["checkpoint"].endswith("best.pt")


def test_no_resume_removes_the_earlier_runs_files_before_it_starts(killed_and_rerun, tmp_path, capsys, monkeypatch):
    """``--no-resume`` owns the folder from its start: stopped at once, it leaves none of the earlier run's files."""
    run, _, _ = killed_and_rerun
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "metrics.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        (out / name).write_bytes((run / name).read_bytes())
    (out / "missing_train.csv").write_text("id,reason\nx,missing\n")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # a kill just after the start

    monkeypatch.setattr(fnac_lab.train, "_train", stopped)
    assert main(["train", *TINY, "--out", str(out), "--no-resume"]) == 130
    err = capsys.readouterr().err
    assert "removed the earlier run's 6 files" in err and INTERRUPTED in err
    assert [p.name for p in out.rglob("*") if p.is_file()] == []


def test_pretrain_no_resume_removes_the_earlier_files(tmp_path, monkeypatch):
    out = tmp_path / "p"
    out.mkdir()
    for name in fnac_lab.pretrain.PRETRAIN_FILES:
        (out / name).write_text("earlier")
    monkeypatch.setattr(fnac_lab.pretrain, "_pretrain",
                        lambda *a, **k: sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE))
    assert fnac_lab.pretrain.pretrain(fnac_lab.config.pretrain_preset("smoke"), out, resume=False) == []


# -- grids: one notebook, one grid per folder, files checked before they are expanded -----------------------------

def test_a_points_identity_covers_its_notebook(sleeper, tmp_path, capsys):
    """The same parameters with another notebook, or with the notebook's code changed, into the same --out are
    refused; the finished point keeps the first notebook's result and names that notebook."""
    from fnac_lab.ablate.grid import notebook_sha256

    other = tmp_path / "other.ipynb"
    nb = nbformat.read(sleeper, as_version=4)
    nb.cells[1].source += "\nprint('another notebook')"
    nbformat.write(nb, other)
    out = tmp_path / "out"
    assert main(["ablate", str(write_grid(tmp_path / "a.yaml", sleeper, {"seed": [0]})), "--out", str(out), "--quiet"]) == 0
    done = json.loads(next(out.glob("points/*/done.json")).read_text())
    assert done["notebook"] == str(sleeper) and done["notebook_sha256"] == notebook_sha256(sleeper)
    before = snapshot(out)
    refused(capsys, "ablate", write_grid(tmp_path / "b.yaml", other, {"seed": [0]}), "--out", out,
            needles=(str(out), "holds the results of a grid over notebook", "use another --out"))
    assert snapshot(out) == before
    assert notebook_sha256(other) != notebook_sha256(sleeper)
    nb.metadata["edited"] = True  # outputs, metadata and prose are not what a point runs
    nb.cells.append(nbformat.v4.new_markdown_cell("A note."))
    nbformat.write(nb, tmp_path / "same_code.ipynb")
    assert notebook_sha256(tmp_path / "same_code.ipynb") == notebook_sha256(other)


def test_a_second_grid_into_one_out_is_refused_unless_it_keeps_every_point(sleeper, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["ablate", str(write_grid(tmp_path / "a.yaml", sleeper, {"seed": [0, 1]})), "--out", str(out),
                 "--quiet"]) == 0
    before = snapshot(out)
    refused(capsys, "ablate", write_grid(tmp_path / "b.yaml", sleeper, {"seed": [5]}), "--out", out,
            needles=(str(out), "holds the results of another grid, 2 of whose 2 points this one leaves out"))
    assert snapshot(out) == before
    assert main(["ablate", str(write_grid(tmp_path / "c.yaml", sleeper, {"seed": [0, 1, 2]})), "--out", str(out),
                 "--quiet"]) == 0
    assert "3 points: 1 run, 2 already finished, 0 failed" in capsys.readouterr().out
    results = pd.read_csv(out / "results.csv")
    assert results["seed"].tolist() == [0, 1, 2] and set(results["status"]) == {"finished"}


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(sleeper, tmp_path):
    lines = ["notebook: " + str(sleeper), "base:", '  a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"  a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 10)]
    lines += ["grid: {seed: [0]}"]
    grid = tmp_path / "bomb.yaml"
    grid.write_text("\n".join(lines) + "\n")  # 10**10 strings once expanded, in 600 bytes
    proc = subprocess.run([sys.executable, "-c", "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, "
                           "(4 << 30, 4 << 30)); from fnac_lab.cli import main; sys.exit(main(sys.argv[1:]))",
                           "ablate", str(grid), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=ENV, timeout=120)
    one_line(proc, str(grid), "more than 100000 values once its aliases are expanded")


def test_an_oversized_or_self_containing_yaml_file_is_one_line(sleeper, tmp_path, capsys):
    big = tmp_path / "big.yaml"
    big.write_text("notebook: x\nbase: {pad: '" + "x" * (2 << 20) + "'}\n")
    refused(capsys, "ablate", big, "--out", tmp_path / "out",
            needles=(str(big), "more than the 1048576 a settings file may have"))
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"notebook: {sleeper}\nbase: &b {{inner: *b}}\ngrid: {{seed: [0]}}\n")
    refused(capsys, "ablate", loop, "--out", tmp_path / "out",
            needles=(str(loop), "an alias refers to a node that contains it"))
    assert not (tmp_path / "out").exists()


def test_a_grid_whose_notebook_is_not_json_is_one_line(tmp_path, capsys):
    notebook = tmp_path / "broken.ipynb"
    notebook.write_text("{ this is not json")
    grid = write_grid(tmp_path / "grid.yaml", notebook, {"seed": [0]})
    refused(capsys, "ablate", grid, "--out", tmp_path / "out", needles=(str(notebook), "is not a Jupyter notebook"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_jobs_below_one_are_refused(sleeper, tmp_path, jobs, capsys):
    grid = write_grid(tmp_path / "grid.yaml", sleeper, {"seed": [0]})
    refused(capsys, "ablate", grid, "--out", tmp_path / "out", "--jobs", jobs,
            needles=(f"--jobs {jobs}", "must be 1 or more"))
    assert not (tmp_path / "out").exists()


# -- notebook parameters as papermill users write them -------------------------------------------------------------

def papermill_cli(name: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """What ``papermill NOTEBOOK OUT -p NAME VALUE ...`` does: each value converted as papermill's command line converts
    it (``false`` stays the text "false"), the notebook executed (through papermill's Python API, in this process:
    the kernel is a process of its own); the error, if any, as stderr."""
    from papermill.cli import _resolve_type

    names, values = args[1::3], args[2::3]
    assert list(args[0::3]) == ["-p"] * len(names)
    try:
        papermill.execute_notebook(str(REPO / "notebooks" / name), str(tmp_path / f"out_{name}"),
                                   parameters={k: _resolve_type(v) for k, v in zip(names, values)},
                                   cwd=str(tmp_path), progress_bar=False, kernel_name="python3", engine_name=ENGINE_NAME)
    except papermill.PapermillExecutionError as exc:
        return subprocess.CompletedProcess(args, 1, "", f"{exc.ename}: {exc.evalue}")
    return subprocess.CompletedProcess(args, 0, "", "")


def test_papermill_passes_false_as_text():
    """The premise of the parameter checks: papermill's command line hands ``false`` over as a (truthy) string."""
    from papermill.cli import _resolve_type

    assert _resolve_type("false") == "false" and _resolve_type("False") is False and _resolve_type("-3") == -3


def test_papermill_false_is_false(tmp_path):
    """``-p smoke false`` arrives as text: read as a truthy string it would run the smoke preset and ignore ``preset``."""
    proc = papermill_cli("01_train.ipynb", tmp_path, "-p", "smoke", "false", "-p", "preset", "no_such_preset")
    assert proc.returncode != 0 and "unknown preset 'no_such_preset'" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("notebook,args,needle", [
    ("06_why_fnac_fails.ipynb", ["-p", "smoke", "maybe"], "notebook parameter smoke: expected bool, got 'maybe'"),
    ("05_localisation_maps.ipynb", ["-p", "smoke", "1", "-p", "k", "-3"],
     "notebook parameter k: -3 is below its least value, 1"),
])
def test_notebook_parameters_of_the_wrong_type_are_one_line(notebook, args, needle, tmp_path):
    proc = papermill_cli(notebook, tmp_path, *args)
    assert proc.returncode != 0
    assert proc.stderr == f"FnacError: {needle}", proc.stderr[-2000:]


@pytest.mark.parametrize("value,expected", [(True, True), (False, False), (1, True), (0, False), ("false", False),
                                            ("False", False), ("true", True), ("0", False), ("1", True),
                                            (" yes ", True), ("off", False)])
def test_flag_parameters_read_the_words_papermill_passes(value, expected):
    from fnac_lab.parameters import flag_parameter

    assert flag_parameter("smoke", value) is expected


def test_number_and_name_parameters():
    from fnac_lab.parameters import float_parameter, int_parameter, mapping_parameter, names_parameter
    from fnac_lab.utils import FnacError

    assert int_parameter("k", "4") == 4 and int_parameter("k", None, optional=True) is None
    assert float_parameter("share", "0.25") == 0.25 and float_parameter("share", 1) == 1.0
    assert names_parameter("grids", "fn_ratio, warmup") == ["fn_ratio", "warmup"]
    assert mapping_parameter("base", '{"seed": 1}') == {"seed": 1}
    for call, needle in ((lambda: int_parameter("k", 2.5), "k: expected int, got 2.5"),
                         (lambda: int_parameter("k", True), "k: expected int, got True"),
                         (lambda: float_parameter("share", "-0.5", minimum=0), "share: -0.5 is below"),
                         (lambda: float_parameter("share", "nan", minimum=0), "share: nan is below"),
                         (lambda: names_parameter("grids", 3), "grids: expected a list of names"),
                         (lambda: mapping_parameter("base", "seed=1"), "base: expected a mapping")):
        with pytest.raises(FnacError, match=f"^notebook parameter {needle}"):
            call()


# -- resuming: the configuration is checked before any epoch -------------------------------------------------------

def test_an_unknown_setting_in_last_pt_is_refused_before_any_epoch(killed_and_rerun, tmp_path, capsys):
    import torch

    run, _, _ = killed_and_rerun
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    state["config"]["colour"] = "blue"  # a setting of another version
    torch.save(state, out / "checkpoints" / "last.pt")
    before = snapshot(out)
    refused(capsys, "train", *TINY, "--set", "epochs=3", "--out", out,
            needles=("last.pt: its configuration has an unknown setting 'colour'", "--no-resume"))
    assert snapshot(out) == before  # no epoch trained, last.pt not rewritten


def test_fewer_epochs_than_trained_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--set", "epochs=3", "--out", str(out)]) == 0
    capsys.readouterr()
    before = snapshot(out)
    refused(capsys, "train", *TINY, "--set", "epochs=2", "--out", out,
            needles=("3 epochs are trained there already and epochs=2 asks for fewer",))
    assert json.loads((out / "config.json").read_text())["epochs"] == 3 and snapshot(out) == before


# -- memory, ids, versions and caches ------------------------------------------------------------------------------

def test_running_out_of_cpu_memory_is_one_line_naming_what_to_lower(tmp_path):
    """The real allocator failing (an address-space cap stands for a small machine): 224 px at batch 192."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (5 << 30, 5 << 30)); "
            "from fnac_lab.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "train", "--preset", "smoke", "--set", "n_train=192",
                           "--set", "n_val=8", "--set", "n_test=8", "--set", "image_size=224", "--set",
                           "batch_size=192", "--out", str(tmp_path / "run"), "--quiet"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    one_line(proc, "out of memory on the CPU with batch_size=192 and image_size=224",
             "lower --set batch_size=N or --set image_size=N")


def test_running_out_of_gpu_memory_is_one_line(killed_and_rerun, tmp_path, capsys, monkeypatch):
    import torch

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(fnac_lab.train, "train", exhausted)
    assert main(["train", *TINY, "--set", "batch_size=64", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == ("fnac-lab: error: out of memory on the GPU with batch_size=64 and "
                                               "image_size=32; lower --set batch_size=N or --set image_size=N")
    run, _, _ = killed_and_rerun
    monkeypatch.setattr("fnac_lab.scoring.evaluate_model", exhausted)
    assert main(["evaluate", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--batch-size", "512",
                 "--out", str(tmp_path / "e"), "--quiet"]) == 2
    assert "out of memory on the GPU with batches of 512 at image_size=32; lower --batch-size N" in capsys.readouterr().err


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c"])
def test_ids_with_unicode_line_separators_round_trip_through_the_cache(separator, tmp_path):
    from fnac_lab.data import CachedAVDataset
    from test_cache import make_root

    root = tmp_path / "root"
    ids = make_root(root, 2)
    odd = f"clip{separator}x"
    for folder in ("frames", "audio"):
        source = next((root / folder).glob(f"{ids[1]}.*"))
        source.rename(source.with_name(odd + source.suffix))
    assert main(["cache", "--data-root", str(root), "--out", str(tmp_path / "cache"), "--workers", "1", "--quiet"]) == 0
    cached = CachedAVDataset(tmp_path / "cache")
    assert sorted(cached.ids) == sorted([ids[0], odd]) and len(cached) == 2
    assert cached[cached.ids.index(odd)]["id"] == odd


def test_an_id_with_a_line_break_is_refused_when_the_cache_is_built(tmp_path, capsys):
    from test_cache import make_root

    root = tmp_path / "root"
    ids = make_root(root, 2)
    for folder in ("frames", "audio"):
        source = next((root / folder).glob(f"{ids[1]}.*"))
        source.rename(source.with_name("two\nlines" + source.suffix))
    assert main(["cache", "--data-root", str(root), "--out", str(tmp_path / "cache"), "--workers", "1", "--quiet"]) == 2
    assert "id 'two\\nlines' holds a line break" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"fnac-lab {version('fnac-lab')}"


def test_an_unwritable_pretraining_cache_names_fnac_lab_cache(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home_is_a_file"
    home.write_text("")  # nothing can be created under it, whoever runs this (root included)
    monkeypatch.delenv("FNAC_LAB_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(home))
    refused(capsys, "train", *TINY, "--set", "visual_pretrain=smoke", "--out", tmp_path / "run",
            needles=(str(home / ".cache" / "fnac-lab" / "pretrain"), "Not a directory", "set FNAC_LAB_CACHE"))
