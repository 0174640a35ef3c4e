"""The papermill ablation runner: grids, the ``fnac-lab ablate`` command, skipping finished points, crashes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from fnac_lab import ablate, analysis
from fnac_lab.utils import FnacError

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "REFERENCE.md"

#: A notebook that needs no torch: it writes metrics derived from ``x``, or fails while ``fail_flag`` exists.
BODY = """
import json, pathlib
if fail_flag and pathlib.Path(fail_flag).exists():
    raise RuntimeError(f"deliberate crash at x={x}")
metrics = {"ap50": x / 10, "mean_ciou": x / 20, "auc": x / 30, "n_samples": 10, "baseline": {"ap50": 0.05},
           "val_ap50_by_epoch": [0.1, 0.2], "config": {"seed": 0}}
pathlib.Path(out_dir, "metrics.json").write_text(json.dumps(metrics))
pathlib.Path(out_dir, "cwd.txt").write_text(str(pathlib.Path.cwd()))
"""


@pytest.fixture(scope="module")
def toy_notebook(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("toy")
    params = new_code_cell('x = 0\nlabel = "a"\nfail_flag = None\nout_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(BODY)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = folder / "toy.ipynb"
    nbformat.write(nb, path)
    return path


def _env() -> dict:
    # Kernels of these tiny notebooks need one thread; two cores stay free for the test process.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cli(args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fnac_lab", *args], cwd=cwd, capture_output=True, text=True,
                          env=_env(), timeout=600)


def test_cli_runs_a_two_point_grid_and_a_rerun_redoes_nothing(toy_notebook, tmp_path):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "toy.ipynb").write_bytes(toy_notebook.read_bytes())
    (tmp_path / "grid.yaml").write_text("notebook: nb/toy.ipynb\nbase: {label: b}\ngrid:\n  x: [2, 5]\n")
    first = _cli(["ablate", "grid.yaml", "--out", "sweep", "--quiet"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2 points: 2 run, 0 already finished, 0 failed" in first.stdout
    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert list(results["x"]) == [2, 5]
    assert list(results["status"]) == ["finished", "finished"]
    assert results["ap50"].tolist() == pytest.approx([0.2, 0.5])
    assert results["auc"].tolist() == pytest.approx([2 / 30, 5 / 30])
    assert results["baseline_ap50"].tolist() == pytest.approx([0.05, 0.05])
    assert "config_seed" not in results and "val_ap50_by_epoch" not in results
    executed = sorted((tmp_path / "sweep" / "points").glob("*/notebook.ipynb"))
    assert len(executed) == 2
    params = json.loads((executed[0].parent / "params.json").read_text())
    assert params["label"] == "b" and params["out_dir"] == str(executed[0].parent)
    stamps = [p.stat().st_mtime_ns for p in executed]

    again = _cli(["ablate", "grid.yaml", "--out", "sweep", "--quiet"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2 points: 0 run, 2 already finished, 0 failed" in again.stdout
    assert [p.stat().st_mtime_ns for p in executed] == stamps  # no notebook was executed again
    assert pd.read_csv(tmp_path / "sweep" / "results.csv")["ap50"].tolist() == pytest.approx([0.2, 0.5])


def test_a_crashing_point_is_reported_and_the_others_kept(toy_notebook, tmp_path):
    flag = tmp_path / "fail-now"
    flag.write_text("")
    grid = ablate.make_grid(toy_notebook, grid={"x": [1, 3], "fail_flag": [None, str(flag)]})
    cwd = os.getcwd()
    run = ablate.run_grid(grid, tmp_path / "sweep", jobs=2, timeout=300, progress=False)
    assert os.getcwd() == cwd  # points side by side in threads leave this process's working directory alone
    for o in run.outcomes:  # and each kernel ran in its own point's folder
        if o.status == "finished":
            assert Path((o.folder / "cwd.txt").read_text()).resolve() == o.folder.resolve()
    rows = {(r.x, not pd.isna(r.fail_flag)): r for r in run.results.itertuples()}
    assert len(run.outcomes) == 4 and len(run.failed) == 2
    for x in (1, 3):
        ok, bad = rows[x, False]._asdict(), rows[x, True]._asdict()
        assert ok["status"] == "finished" and ok["ap50"] == pytest.approx(x / 10)
        assert bad["status"] == "failed" and f"deliberate crash at x={x}" in bad["error"]
        assert pd.isna(bad["ap50"])
    failed_folder = run.failed[0].folder
    assert not (failed_folder / ablate.DONE).exists()
    assert "deliberate crash" in (failed_folder / ablate.ERROR).read_text()
    assert (failed_folder / "notebook.ipynb").is_file()  # the failed execution is kept for reading

    # From the command line the same failure ends with one error line and exit code 2.
    (tmp_path / "grid.yaml").write_text(json.dumps(grid.to_dict()))
    cli = _cli(["ablate", "grid.yaml", "--out", str(tmp_path / "sweep"), "--quiet"], cwd=tmp_path)
    assert cli.returncode == 2
    assert "fnac-lab: error: 2 of 4 grid points failed" in cli.stderr
    assert "4 points: 0 run, 2 already finished, 2 failed" in cli.stdout

    # Once the cause is gone, a rerun runs only the failed points.
    flag.unlink()
    rerun = ablate.run_grid(grid, tmp_path / "sweep", timeout=300, progress=False)
    assert sorted(o.status for o in rerun.outcomes) == ["finished", "finished", "skipped", "skipped"]
    assert rerun.results["ap50"].tolist() == pytest.approx([0.1, 0.1, 0.3, 0.3])
    # results.csv gives each point's state, whether it finished in this run or an earlier one
    assert rerun.results["status"].tolist() == ["finished"] * 4
    assert pd.read_csv(tmp_path / "sweep" / "results.csv")["status"].tolist() == ["finished"] * 4
    assert not (failed_folder / ablate.ERROR).exists()


def test_grid_points_are_the_cartesian_product_with_mapping_axes(toy_notebook):
    grid = ablate.make_grid(toy_notebook, base={"label": "z", "x": 9},
                            grid={"x": [1, 2], "weights": [{"a": 0, "b": 0}, {"a": 1, "b": 2}, {"a": 3, "b": 4}]})
    points = grid.points()
    assert [(p.parameters["x"], p.parameters["a"], p.parameters["b"]) for p in points] == [
        (1, 0, 0), (1, 1, 2), (1, 3, 4), (2, 0, 0), (2, 1, 2), (2, 3, 4)]
    assert all(p.parameters["label"] == "z" and "weights" not in p.parameters for p in points)
    assert points[1].values == {"x": 1, "weights": {"a": 1, "b": 2}}
    assert len({p.name for p in points}) == 6
    assert points[1].name.startswith("x=1_weights=a=1,b=2-")
    changed = ablate.make_grid(toy_notebook, base={"label": "y"}, grid={"x": [1]}).points()[0]
    same = ablate.make_grid(toy_notebook, base={"label": "z"}, grid={"x": [1]}).points()[0]
    assert changed.name != same.name  # a changed base never reuses an old result


def test_grid_blocks_are_a_union_of_products(toy_notebook, tmp_path):
    path = tmp_path / "blocks.yaml"
    path.write_text(f"notebook: {toy_notebook}\nbase: {{label: q}}\n"
                    "grid:\n  - {x: [1, 2], fail_flag: [null]}\n  - {x: [2, 3]}\n")
    grid = ablate.load_grid(path)
    points = grid.points()
    assert [p.parameters["x"] for p in points] == [1, 2, 2, 3]  # each block's product, in file order
    assert ["fail_flag" in p.parameters for p in points] == [True, True, False, False]
    assert all(p.parameters["label"] == "q" for p in points)
    again = ablate.make_grid(toy_notebook, grid=[{"x": [1, 2]}, {"x": [2, 3]}]).points()
    assert [p.parameters["x"] for p in again] == [1, 2, 3]  # the same point twice is run once
    assert grid.axes == {"x": [1, 2, 3], "fail_flag": [None]}
    assert ablate.load_grid(path).to_dict()["grid"] == [{"x": [1, 2], "fail_flag": [None]}, {"x": [2, 3]}]
    path.write_text(f"notebook: {toy_notebook}\ngrid:\n  - {{x: [1]}}\n  - 5\n")
    with pytest.raises(FnacError, match="grid block 2 must be a mapping of axes"):
        ablate.load_grid(path)


def test_grid_errors_name_the_problem(toy_notebook, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"notebook: {toy_notebook}\ngrid: {{y: [1]}}\nbase: {{lable: q}}\n")
    with pytest.raises(FnacError, match=r"no parameter 'lable' \(did you mean 'label'\?\), 'y'"):
        ablate.check_parameters(ablate.load_grid(bad))
    bad.write_text(f"notebook: {toy_notebook}\ngrids: {{x: [1]}}\n")
    with pytest.raises(FnacError, match=r"bad.yaml: unknown key\(s\) 'grids'"):
        ablate.load_grid(bad)
    bad.write_text("notebook: missing.ipynb\ngrid: {x: [1]}\n")
    with pytest.raises(FnacError, match="notebook missing.ipynb not found"):
        ablate.load_grid(bad)
    bad.write_text(f"notebook: {toy_notebook}\ngrid: {{x: 1}}\n")
    with pytest.raises(FnacError, match="axis 'x' must be a non-empty list"):
        ablate.load_grid(bad)
    with pytest.raises(FnacError, match="'out_dir' is set by the runner"):
        ablate.make_grid(toy_notebook, base={"out_dir": "x"})
    cli = _cli(["ablate", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "o")], cwd=tmp_path)
    assert cli.returncode == 2 and "absent.yaml: grid file not found" in cli.stderr


def test_bundled_grids_fit_the_training_notebook():
    import papermill

    known = set(papermill.inspect_notebook(str(REPO / "notebooks" / "01_train.ipynb")))
    files = sorted((REPO / "data" / "grids").glob("*.yaml"))
    assert {f.stem for f in files} >= set(ablate.PAPER_TABLES) | {"smoke"}
    for path in files:
        grid = ablate.bundled_grid(path.stem)
        ablate.check_parameters(grid)
        if grid.paper is not None:
            knob = ablate.PAPER_TABLES[grid.paper].knob
            if path.stem != "smoke":
                assert next(iter(grid.axes)) == knob, path
        for point in grid.points():
            params = ablate.notebook_parameters(point.parameters, known)
            assert set(params) <= known
            # Every point's configuration builds, as the notebook builds it.
            analysis.notebook_config(params.get("preset", "demo"), smoke=bool(params.get("smoke")),
                                     method=params.get("method"), overrides=params.get("overrides"),
                                     fnac_strength=params.get("fnac_strength"))


def test_settings_reach_the_training_notebook_through_its_overrides():
    known = {"preset", "method", "overrides", "out_dir"}
    point = {"preset": "demo", "seed": 1, "w_tne": 0, "fnac.lr_typo": 3, "overrides": {"lr": 0.1}, "method": "nce"}
    assert ablate.notebook_parameters(point, known) == {
        "preset": "demo", "method": "nce", "fnac.lr_typo": 3, "overrides": {"lr": 0.1, "seed": 1, "w_tne": 0}}
    # A notebook without overrides gets the parameters as they are.
    assert ablate.notebook_parameters(point, {"preset", "seed"}) == point


def test_paper_tables_match_the_reference_sheet():
    if not REFERENCE.is_file():
        pytest.skip("../shared/REFERENCE.md is not available")
    text = REFERENCE.read_text()

    def numbers(line_start: str) -> list[float]:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(line_start))
        return [float(v) for v in re.findall(r"\d+\.\d+", line.split(":", 1)[1])]

    s1 = text.split("Table S1", 1)[1].split("Ablations", 1)[0]
    fn, flickr, vggss = (re.findall(r"\d+\.\d+", part) for part in re.split(r"FN ratio|Flickr cIoU|VGG-SS cIoU", s1)[1:4])
    table = ablate.PAPER_TABLES["fn_ratio"]
    assert table.columns["FN ratio"] == tuple(map(float, fn))
    assert table.columns["Flickr cIoU"] == tuple(map(float, flickr))
    assert table.columns["VGG-SS cIoU"] == tuple(map(float, vggss))
    for key, start in [("warmup", "- warm-up"), ("visual_dropout", "- visual dropout"), ("distance", "- distance"),
                       ("audio_augment", "- audio augmentation"), ("tne_threshold", "- TNE threshold")]:
        values = numbers(start)
        if key == "tne_threshold":  # the line wraps onto the next one
            after = text.split("- TNE threshold", 1)[1].split("- batch size", 1)[0]
            values = [float(v) for v in re.findall(r"\d+\.\d+", after.split(":", 1)[1])]
        pairs = list(zip(values[0::2], values[1::2]))
        table = ablate.PAPER_TABLES[key]
        assert table.columns["Flickr cIoU"] == tuple(p[0] for p in pairs), key
        assert table.columns["VGG-SS cIoU"] == tuple(p[1] for p in pairs), key


def test_paper_comparison_and_sweep_statement():
    results = pd.DataFrame({"distance": ["l1", "l2"], "ap50": [0.6, 0.5], "mean_ciou": [0.5, 0.45],
                            "n_samples": [500, 500]})
    table = ablate.paper_comparison(results, "distance", ablate.PAPER_TABLES["distance"], metrics=["ap50"])
    assert list(table.index) == ["l1", "l2", "smooth_l1"]
    assert table.loc["l2", "ours: ap50"] == 0.5 and pd.isna(table.loc["smooth_l1", "ours: ap50"])
    assert table.loc["smooth_l1", "paper: Flickr cIoU (%)"] == 82.32
    warm = ablate.paper_comparison(pd.DataFrame({"warmup_epochs": [0, 1], "ap50": [0.1, 0.2]}), "warmup_epochs",
                                   ablate.PAPER_TABLES["warmup"], metrics=["ap50"])
    assert list(warm.index) == ["0", "1", "3", "5", "10"]  # 0 and 0.0 are the same value
    text = ablate.sweep_statement(results, "distance")
    noise = 2 * (2 * 0.55 * 0.45 / 500) ** 0.5
    assert "best ap50 0.600 at l1, worst 0.500 at l2 (spread 0.100" in text
    assert f"larger than twice the standard error of a difference of two points: {noise:.3f}" in text


def test_flatten_metrics_joins_nested_keys():
    flat = ablate.flatten_metrics({"ap50": 0.5, "baseline": {"ap50": 0.4, "val": {"auc": 0.3}}, "seeds": [1],
                                   "config": {"lr": 1}, "reference_maps": {"random": {"ap50": 0.0}}})
    assert flat == {"ap50": 0.5, "baseline_ap50": 0.4, "baseline_val_auc": 0.3, "reference_maps_random_ap50": 0.0}
