"""Every notebook runs headless under papermill with ``smoke=True``; the tutorial also passes ``pytest --nbval``
against its stored outputs. One smoke training run (01) feeds the explorer, embedding and map notebooks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import pytest

from fnac_lab import analysis
from fnac_lab.config import TrainConfig
from fnac_lab.scoring import evaluate_model
from fnac_lab.checkpoint import load_checkpoint
from fnac_lab.papermill_engine import ENGINE_NAME
from notebook_outputs import outputs

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
TUTORIAL = NOTEBOOKS / "00_false_negatives_tutorial.ipynb"
ALL = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
#: Kernels run single-threaded: the smoke tensors gain nothing from a second thread, and on two cores shared with
#: the test process OpenMP's spin-waiting would dominate.
#: ``PYTHONFAULTHANDLER``: a kernel that crashes prints every thread's Python stack into the test's output.
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
DURATIONS: dict[str, float] = {}
#: A smoke cell takes under a minute on two busy cores; one still running after this long is stuck. It is interrupted
#: (so its traceback shows where) and the test fails, well inside pytest-timeout's 600 s for the whole test.
CELL_TIMEOUT_S = 240
STUCK_CELL = {"ename": "CellTimeoutError", "evalue": f"no reply after {CELL_TIMEOUT_S} s: the kernel was interrupted, "
              "its traceback (when it could be interrupted) is the error output of this cell", "traceback": []}


@pytest.fixture(scope="module", autouse=True)
def single_threaded_kernels():
    saved = {k: os.environ.get(k) for k in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    print("\nsmoke notebook durations: " + ", ".join(f"{k} {v:.0f} s" for k, v in DURATIONS.items()))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


def execute(name: str, workdir: Path, **parameters) -> nbformat.NotebookNode:
    """Run a notebook with ``smoke=True`` from an unrelated working directory and return the executed copy."""
    cwd = workdir / f"cwd-{name}"
    cwd.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    papermill.execute_notebook(str(NOTEBOOKS / name), str(workdir / name), parameters={"smoke": True, **parameters},
                               kernel_name="python3", cwd=str(cwd), progress_bar=False, engine_name=ENGINE_NAME,
                               execution_timeout=CELL_TIMEOUT_S, interrupt_on_timeout=True,
                               error_on_timeout=STUCK_CELL)  # a stuck kernel fails the test, never hangs it
    DURATIONS[name] = time.perf_counter() - t0
    return nbformat.read(workdir / name, as_version=4)


@pytest.fixture(scope="module")
def train_run(workdir) -> tuple[Path, nbformat.NotebookNode]:
    run_dir = workdir / "train-run"
    nb = execute("01_train.ipynb", workdir, out_dir=str(run_dir), progress=False, n_examples=3)
    return run_dir, nb


def test_notebooks_are_parameterised_and_stripped():
    assert ALL == ["00_false_negatives_tutorial.ipynb", "01_train.ipynb", "02_ablations.ipynb",
                   "03_false_negative_explorer.ipynb", "04_embeddings.ipynb", "05_localisation_maps.ipynb",
                   "06_why_fnac_fails.ipynb", "07_what_recovers_the_gap.ipynb"]
    for name in ALL:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert nb.metadata.kernelspec.name == "python3", name
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in first.metadata.get("tags", []), name
        assert re.search(r"^smoke = False", first.source, re.M), name
        if name != TUTORIAL.name:
            assert all(not c.get("outputs") and c.get("execution_count") is None
                       for c in nb.cells if c.cell_type == "code"), f"{name} is committed with outputs"
    tutorial = nbformat.read(TUTORIAL, as_version=4)
    assert all(c.get("outputs") for c in tutorial.cells if c.cell_type == "code" and "parameters" not in
               c.metadata.get("tags", []) and "import" not in c.source.split("\n", 1)[0])


def test_train_notebook_takes_a_preset_a_method_and_overrides():
    params = papermill.inspect_notebook(str(NOTEBOOKS / "01_train.ipynb"))
    for name in ("smoke", "preset", "method", "overrides", "out_dir", "baseline", "fnac_strength"):
        assert name in params
    assert params["preset"]["default"] == '"demo"' and params["baseline"]["default"] == "True"
    assert params["method"]["default"] == "None" and params["overrides"]["default"] == "{}"
    assert not set(params) & set(TrainConfig.field_names()) - {"method"}  # settings come through overrides


def test_train_notebook_smoke(train_run):
    run_dir, nb = train_run
    report = json.loads((run_dir / "metrics.json").read_text())
    for name, folder in (("fnac", run_dir / "fnac"), ("baseline", run_dir / "nce")):
        summary = json.loads((folder / "summary.json").read_text())
        scores = report if name == "fnac" else report["baseline"]
        for key in ("ap50", "mean_ciou", "auc", "n_samples"):
            assert scores[key] == summary["test"][key], (name, key)
    # The NCE twin is the same configuration trained with the nce method.
    cfg_fnac = json.loads((run_dir / "fnac" / "config.json").read_text())
    cfg_nce = json.loads((run_dir / "nce" / "config.json").read_text())
    assert (cfg_fnac["method"], cfg_nce["method"]) == ("fnac", "nce")
    common = set(TrainConfig.field_names()) - {"method", "options"}
    assert {k for k in common if cfg_fnac.get(k) != cfg_nce.get(k)} == set()
    assert "fnac" in cfg_fnac and "fnac" not in cfg_nce and "nce" in cfg_nce
    # Scores recomputed independently from the best checkpoint.
    model, cfg, _ = load_checkpoint(run_dir / "fnac" / "checkpoints" / "best.pt")
    test = evaluate_model(model, analysis.evaluation_split(cfg, "test"), batch_size=64, progress=False)
    assert report["ap50"] == pytest.approx(test.scores["ap50"])
    assert report["mean_ciou"] == pytest.approx(test.scores["mean_ciou"])
    assert report["gain"]["ap50"] == pytest.approx(report["ap50"] - report["baseline"]["ap50"])
    # scores.md: FNAC, NCE baseline and the three reference maps, with the numbers of metrics.json.
    rows = {}
    for line in (run_dir / "scores.md").read_text().splitlines()[2:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = [float(c) for c in cells[1:]]
    assert list(rows) == ["FNAC", "NCE baseline", "centre prior", "random map", "oracle (gt-derived)"]
    assert rows["FNAC"] == [round(report[k], 3) for k in ("ap50", "mean_ciou", "auc")]
    assert rows["NCE baseline"][0] == round(report["baseline"]["ap50"], 3)
    assert rows["oracle (gt-derived)"][0] == round(report["reference_maps"]["oracle"]["ap50"], 3)
    # "What this run shows" is computed, and the plotly figures carry HTML for the export.
    sources = "\n".join(c.source for c in nb.cells)
    assert "## What this run shows" in sources
    shows = " ".join(outputs(nb, "text/markdown"))
    assert f"test AP50 **{report['ap50']:.3f}**" in shows and f"AP50 gain is **{report['gain']['ap50']:+.3f}**" in shows
    html = outputs(nb, "text/html")
    assert sum("window.fnacPlotlyReady = " in h for h in html) == 1, "plotly.js is not embedded once"
    assert sum("Plotly.newPlot" in h for h in html) >= 3


def test_html_export_shows_plotly_figures(train_run):
    """``nbconvert --to html --no-input`` (as ``make demo`` runs it) keeps plotly.js inline once, ahead of every
    figure, and one ``Plotly.newPlot`` call per figure div, waiting for the library; the page stays under 2 MB and
    shows no code, so that a reader meets the results first."""
    from nbconvert import HTMLExporter

    _, nb = train_run
    body, _ = HTMLExporter(exclude_input=True).from_notebook_node(nb)
    assert "viz.setup_notebook()" not in body and "smoke = " not in body
    library = body.find("window.fnacPlotlyReady = ")
    divs = [re.search(r'id="([0-9a-f-]{36})"', tag).group(1)
            for tag in re.findall(r'<div[^>]*class="plotly-graph-div"[^>]*>', body)]
    assert library >= 0, "plotly.js is not embedded in the HTML export"
    assert len(divs) >= 3
    for div in divs:
        assert body.index(f'id="{div}"') > library
        assert re.search(rf'fnacPlotlyReady[^<]*Plotly\.newPlot\(\s*"{div}"', body), div
    assert body.count("window.fnacPlotlyReady = ") == 1
    assert len(body.encode()) < 2_000_000, f"HTML report of {len(body.encode()) / 1e6:.2f} MB"


@pytest.mark.parametrize("name", ["03_false_negative_explorer.ipynb", "04_embeddings.ipynb", "05_localisation_maps.ipynb"])
def test_analysis_notebooks_smoke_on_the_trained_run(train_run, workdir, name):
    run_dir, _ = train_run
    nb = execute(name, workdir, run_dir=str(run_dir))
    text = "\n".join(outputs(nb, "text/plain"))
    assert f"from the best checkpoints of the run in {run_dir}" in text
    assert "data: builtin test split, 64 samples" in text
    report = json.loads((run_dir / "metrics.json").read_text())
    if name.startswith("05"):
        # The summary table's AP50 of both models equals the training run's test AP50.
        assert re.search(rf"^FNAC\s+{report['ap50']:.3f}\s", text, re.M), text
        assert re.search(rf"^NCE baseline\s+{report['baseline']['ap50']:.3f}\s", text, re.M), text
        # Negatives beside the positives: the extended protocol's scores, AP50 over the positives first.
        assert "64 positives and 32 negatives (16 silent, 16 off screen)" in text
        assert re.search(rf"^FNAC\s+{report['ap50']:.3f}(\s+\d\.\d{{3}}){{3}}$", text, re.M), text
    if name.startswith("03"):
        assert re.search(r"^audio\s+: AP FNAC \d\.\d{3}, NCE baseline \d\.\d{3}", text, re.M)
        assert sum("Plotly.newPlot" in h for h in outputs(nb, "text/html")) >= 2
    if name.startswith("04"):
        assert "nearest-neighbour class accuracy over 64 samples" in text
    conclusion = [o["data"]["text/markdown"] for o in nb.cells[-1].outputs if "text/markdown" in o.get("data", {})]
    assert len(conclusion) == 1 and "untrained" not in conclusion[0]  # the notebook ends with its conclusion
    if name.startswith("05"):
        assert f"- AP50: {report['ap50']:.3f} for FNAC against {report['baseline']['ap50']:.3f} for NCE baseline" \
            in conclusion[0]


def test_analysis_notebook_smoke_without_checkpoints(workdir):
    nb = execute("03_false_negative_explorer.ipynb", workdir)
    assert "fresh, untrained models of the smoke preset" in "\n".join(outputs(nb, "text/plain"))
    conclusion = outputs(nb, "text/markdown")[-1]
    assert conclusion.endswith("FNAC (untrained) and NCE baseline (untrained) are untrained (smoke mode): these numbers "
                               "compare random initialisations, not what the methods learn.")


def test_ablation_notebook_smoke(workdir):
    out = workdir / "ablations"
    nb = execute("02_ablations.ipynb", workdir, out_dir=str(out))
    import pandas as pd

    results = pd.read_csv(out / "smoke" / "results.csv")
    assert list(results["distance"]) == ["l1", "l2"] and list(results["status"]) == ["finished", "finished"]
    for row in results.itertuples():
        metrics = json.loads((Path(row.folder) / "metrics.json").read_text())
        assert row.ap50 == pytest.approx(metrics["ap50"]) and metrics["config"]["fnac"]["distance"] == row.distance
        # the grid's folder is the log root of its points' TensorBoard curves
        assert len(list((Path(row.folder) / "fnac" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert any("Distance D of the FNAC terms" in m for m in outputs(nb, "text/markdown"))
    from fnac_lab.ablate import sweep_statement

    conclusion = [o["data"]["text/markdown"] for o in nb.cells[-1].outputs if "text/markdown" in o.get("data", {})]
    assert conclusion == [f"- **smoke**: {sweep_statement(results, 'distance')}"]  # the notebook ends with it
    table = next(h for h in outputs(nb, "text/html") if "<table" in h and "ours: ap50" in h)
    assert "paper: VGG-SS cIoU (%)" in table and "nan" not in table.lower()  # a value one side lacks: left empty


def test_diagnosis_notebook_reads_the_committed_results(workdir):
    """06 shows the table that the committed diagnosis results make, and the gap in sentences computed from it."""
    import pandas as pd

    from fnac_lab.ablate.diagnosis import diagnosis_markdown, diagnosis_statements, paired_gains

    results = REPO / "data" / "results" / "fnac_diagnosis.csv"
    nb = execute("06_why_fnac_fails.ipynb", workdir)
    table = pd.read_csv(results)
    shown = "\n".join(outputs(nb, "text/markdown"))
    assert diagnosis_markdown(paired_gains(table), by_seed=False).strip() in shown
    assert all(line in shown for line in diagnosis_statements(table))
    assert sum("Plotly.newPlot" in h for h in outputs(nb, "text/html")) == 2


def test_remedies_notebook_reads_the_committed_results(workdir):
    """07 shows the remedies' table that the committed results make, its three figures, and ends with the
    sentences computed from them."""
    import pandas as pd

    from fnac_lab.ablate.remedies import compact_remedies, paired_gains, remedies_markdown, remedies_statements

    results = REPO / "data" / "results"
    nb = execute("07_what_recovers_the_gap.ipynb", workdir)
    table = compact_remedies(pd.read_csv(results / "fn_remedies.csv"))
    statements = remedies_statements(table, pd.read_csv(results / "fn_remedies_epochs.csv"))
    shown = "\n".join(outputs(nb, "text/markdown"))
    assert remedies_markdown(paired_gains(table)).strip() in shown
    assert all(line in shown for line in statements)
    last = [o["data"]["text/markdown"] for o in nb.cells[-1].outputs if "text/markdown" in o.get("data", {})]
    assert last == ["\n".join(f"- {line}" for line in statements)]  # the notebook ends with them
    assert sum("Plotly.newPlot" in h for h in outputs(nb, "text/html")) == 3


def test_tutorial_smoke(workdir):
    nb = execute(TUTORIAL.name, workdir)
    text = "\n".join(outputs(nb, "text/plain"))
    assert "foreground similarity finds them better than whole-frame similarity: True" in text


def test_tutorial_matches_its_stored_outputs(tmp_path):
    """``pytest --nbval`` on the committed tutorial, as a separate process (its own kernel and plugin)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", str(TUTORIAL), "--nbval-sanitize-with",
         str(NOTEBOOKS / "nbval_sanitize.cfg"), "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **KERNEL_ENV}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\d+ passed", proc.stdout)


def definitions(source: str) -> list[str]:
    """The functions and classes a code cell defines, and the lambdas it names (IPython syntax allowed)."""
    import ast

    from IPython.core.inputtransformer2 import TransformerManager

    found = []
    for node in ast.walk(ast.parse(TransformerManager().transform_cell(source))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append(f"{type(node).__name__} {node.name}")
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and isinstance(node.value, ast.Lambda):
            found.append(f"a lambda named on line {node.lineno}")
    return found


def test_notebooks_define_no_functions():
    """Notebooks stay thin: what they compute or draw lives in ``fnac_lab.analysis`` or ``fnac_lab.viz``, where unit
    tests reach it. A lambda passed straight to a call is allowed."""
    assert definitions("%matplotlib inline\ndef f(x):\n    return x\nclass C: ...\ng = lambda: 0\nh(lambda y: y)") == [
        "FunctionDef f", "ClassDef C", "a lambda named on line 5"]
    found = [f"{name}, cell {i}: {what}" for name in ALL
             for i, cell in enumerate(nbformat.read(NOTEBOOKS / name, as_version=4).cells) if cell.cell_type == "code"
             for what in definitions(cell.source)]
    assert not found, "move these into fnac_lab, each with a unit test: " + "; ".join(found)


def test_the_lab_is_configured_to_shut_idle_and_closed_kernels_down_and_write_runs_outside_the_notebooks(
        monkeypatch):
    """``make lab``'s committed settings, read as the server reads them: kernels culled, the lab's defaults beside
    the config, only warnings logged; the notebooks' runs go to ``$FNAC_LAB_RUNS``."""
    from traitlets.config.loader import PyFileConfigLoader

    from fnac_lab.analysis import runs_root, shared_run_dir

    folder = NOTEBOOKS / "lab-settings"
    config = PyFileConfigLoader("jupyter_server_config.py", path=str(folder)).load_config()
    assert config.MappingKernelManager.cull_idle_timeout == 600 and config.MappingKernelManager.cull_interval == 60
    assert Path(config.LabApp.app_settings_dir) == folder.resolve() and config.ServerApp.log_level == "WARN"
    overrides = json.loads((folder / "overrides.json").read_text())
    assert overrides["@jupyterlab/notebook-extension:tracker"]["kernelShutdown"] is True
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert config.ServerApp.tornado_settings == {"ws_ping_timeout": 30000}  # no warning at every connection
    makefile = (REPO / "Makefile").read_text()
    assert "--config=notebooks/lab-settings/jupyter_server_config.py" in makefile
    assert "FNAC_LAB_RUNS=$(abspath runs)" in makefile and "--port=$(LAB_PORT)" in makefile
    monkeypatch.delenv("FNAC_LAB_RUNS", raising=False)
    assert runs_root() == Path.cwd() / "runs"
    monkeypatch.setenv("FNAC_LAB_RUNS", "/somewhere/runs")
    assert runs_root() == Path("/somewhere/runs") and shared_run_dir("demo") == Path("/somewhere/runs/analysis-demo")
