"""Notebooks 03, 04 and 05 on a checkpoint trained on real data: a small stamps benchmark (Tux Paint's photographs
and recordings as mp4 clips with VGG-SS-style annotations) built, prepared and trained for one epoch here, then each
notebook run under papermill on that checkpoint. Needs the fetched stamps (``fnac-lab stamps fetch``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import papermill
import pytest

from fnac_lab.cli import main
from fnac_lab.data import stamps as st
from fnac_lab.data.annotations import read_id_list
from fnac_lab.papermill_engine import ENGINE_NAME
from notebook_outputs import outputs

REPO = Path(__file__).resolve().parents[1]
#: Kernels run single-threaded (as in test_notebooks.py): two cores are shared with the test process.
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
CELL_TIMEOUT_S = 240
STUCK_CELL = {"ename": "CellTimeoutError", "evalue": f"no reply after {CELL_TIMEOUT_S} s: the kernel was interrupted",
              "traceback": []}

pytestmark = pytest.mark.skipif(not (st.default_source() / "stamps").is_dir(),
                                reason=f"Tux Paint stamps are not fetched into {st.default_source()} "
                                       f"(fnac-lab stamps fetch)")


@pytest.fixture(scope="module")
def stamps_run(tmp_path_factory) -> dict:
    """build -> prepare -> train one epoch of the smoke preset on the real clips (classes from train.csv, tested
    on three quarters of test_heard). Small: 16 training clips of 1 s, 16 test clips."""
    tmp = tmp_path_factory.mktemp("stamps")
    root, run = tmp / "root", tmp / "run"
    assert main(["stamps", "build", "--out", str(root), "--n-train", "16", "--n-val", "2", "--n-test", "16",
                 "--seconds", "1", "--workers", "1", "--quiet"]) == 0
    assert main(["prepare", "--videos", str(root / "videos"), "--out", str(root), "--workers", "1", "--quiet"]) == 0
    settings = dict(dataset="real", trainset="vggsound_full", train_root=root, train_ids=root / "train.csv",
                    train_labels=root / "train.csv", class_bias_p=0.5, testset="vggss", test_root=root,
                    test_annotations=root / "vggss.json", test_split_csv=root / "test_heard.csv", val_fraction=0.25,
                    epochs=1, warmup_epochs=0, num_workers=0, batch_size=16)
    assert main(["train", "--preset", "smoke", "--out", str(run), "--quiet",
                 *(f"--set={k}={v}" for k, v in settings.items())]) == 0
    return {"root": root, "run": run, "checkpoint": run / "checkpoints" / "best.pt",
            "summary": json.loads((run / "summary.json").read_text())}


def execute(name: str, out: Path, **parameters) -> nbformat.NotebookNode:
    saved = {k: os.environ.get(k) for k in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)
    try:
        papermill.execute_notebook(str(REPO / "notebooks" / name), str(out / name), parameters={"smoke": True, **parameters},
                                   kernel_name="python3", cwd=str(out), progress_bar=False, engine_name=ENGINE_NAME,
                                   execution_timeout=CELL_TIMEOUT_S, interrupt_on_timeout=True,
                                   error_on_timeout=STUCK_CELL)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nbformat.read(out / name, as_version=4)


@pytest.mark.parametrize("name", ["03_false_negative_explorer.ipynb", "04_embeddings.ipynb", "05_localisation_maps.ipynb"])
def test_analysis_notebooks_on_a_checkpoint_of_real_data(stamps_run, tmp_path, name):
    nb = execute(name, tmp_path, checkpoint=str(stamps_run["checkpoint"]))
    text = "\n".join(outputs(nb, "text/plain"))
    assert f"models: FNAC, from checkpoints {stamps_run['checkpoint']}" in text
    # the notebook saw the real test part: its size, and the stamps' own classes
    n_test = stamps_run["summary"]["test"]["n_samples"]
    found = re.search(rf"^data: real test split \(vggss test of {re.escape(str(stamps_run['root']))}\), "
                      rf"{n_test} samples, (\d+) classes: (.*); tau", text, re.M)
    assert found, text
    shown = found.group(2).split(", ")
    listed = {c for _, c in read_id_list(stamps_run["root"] / "test_heard.csv")}
    stamp_classes = {s.label for s in st.read_class_table()}
    assert len(shown) == int(found.group(1)) and set(shown) <= listed <= stamp_classes
    if name.startswith("03"):
        assert re.search(rf"^1 batches of {n_test}; false-negative ratio per batch: mean 0\.\d\d", text, re.M), text
        assert re.search(r"^FNAC\s+audio\s+\d\.\d{3}", text, re.M), text  # the retrieval table
        assert sum("Plotly.newPlot" in h for h in outputs(nb, "text/html")) >= 2
    if name.startswith("04"):
        assert f"nearest-neighbour class accuracy over {n_test} samples (chance about {1 / len(shown):.2f})" in text
        legend = [t["name"] for h in outputs(nb, "application/vnd.plotly.v1+json") for t in h["data"] if "name" in t]
        assert set(shown) <= set(legend)  # the classes' names in the legend, not their codes
    if name.startswith("05"):
        # the summary's scores are those the training run reported on the same test part
        row = re.search(r"^FNAC((?:\s+\d\.\d+){5})$", text, re.M)
        assert row, text
        reported = stamps_run["summary"]["test"]
        assert [float(v) for v in row.group(1).split()[:3]] == [round(reported[k], 3) for k in ("ap50", "mean_ciou", "auc")]
        assert "no distractor boxes: real frames annotate the sounding object alone" in text
        assert "no negatives shown: the lab draws them beside the built-in test split only" in text
        assert len(outputs(nb, "image/jpeg")) >= 3  # best, worst and the browser's frames
