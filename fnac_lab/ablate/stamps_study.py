"""FNAC against its NCE twin on real photographs and recordings: the paired study on the stamps benchmark.

Every point trains ``fnac-lab train --preset stamps`` in a process of its own. Twins share the seed, hence the data
order, the batches and the initialisation, and differ only in the loss. The FNAC forms (:data:`FORMS`) give the three
FNAC weights as ``w = strength * batch_size``:

- ``nce``: ``w = 0``, the twin;
- ``study``: ``w / B = 0.4`` with detached targets, the strength of the effect study on the built-in data;
- ``published``: ``w / B = 0.78`` with targets not detached, the published 100 at B = 128.

Each point is scored on ``test_heard`` (in its ``summary.json``: training stamps in new pictures with new cuts of
their sounds) and on ``test_unseen_stamps`` (``fnac-lab evaluate``: held-out stamps of the seen classes). The
same-class AUROCs of its embeddings come from the validation clips, whose classes are known. Points resume: a point
whose scores exist is read, not rerun, and a killed training resumes from its ``last.pt``.

``results.csv`` holds one row per point in the columns of :data:`~fnac_lab.ablate.effects.EFFECT_COLUMNS` (so that
``fnac-lab effects`` pairs the twins) plus :data:`EXTRA_COLUMNS`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..config import TrainConfig
from ..data.catalogue import STAMPS_LAYOUT
from ..utils import FnacError, atomic_write_text, output_folder, write_json
from .effects import EFFECT_FN_AUROC, EFFECT_COLUMNS, effects_markdown, paired_effects

#: FNAC forms compared with the NCE twin: name -> (strength w / B, detached targets).
FORMS: dict[str, tuple[float, bool]] = {"nce": (0.0, True), "study": (0.4, True), "published": (0.78, False)}
CLASS_BIAS = (0.0, 0.5)
#: The held-out stamps' split, scored after training beside the summary's test_heard.
UNSEEN = "test_unseen_stamps"
#: Beside the effect study's columns: the form, the held-out stamps' scores, and the loss of the last warm-up epoch
#: (NCE alone), equal between twins to the last digit when they saw the same batches from the same start.
EXTRA_COLUMNS = ("form", "unseen_ap50", "unseen_mean_ciou", "unseen_auc", "warmup_loss")


@dataclass(frozen=True)
class StudyPoint:
    class_bias_p: float
    seed: int
    form: str

    @property
    def name(self) -> str:
        return f"p{self.class_bias_p:g}-seed{self.seed}-{self.form}"


def study_points(seeds: Sequence[int], forms: Sequence[str] = tuple(FORMS),
                 class_bias: Sequence[float] = CLASS_BIAS) -> list[StudyPoint]:
    """Seed by seed, twins together, so that a partial study already pairs every form."""
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        raise FnacError(f"--forms: unknown form {unknown[0]!r} (choose from {', '.join(FORMS)})")
    return [StudyPoint(p, s, f) for s in seeds for p in class_bias for f in forms]


def train_command(point: StudyPoint, root: Path, folder: Path, batch_size: int, sets: Sequence[str]) -> list[str]:
    strength, detach = FORMS[point.form]
    w = strength * batch_size
    settings = {"test_root": root, "seed": point.seed, "class_bias_p": point.class_bias_p, "batch_size": batch_size,
                "w_fns_audio": w, "w_fns_visual": w, "w_tne": w, "detach_targets": detach}
    return [sys.executable, "-m", "fnac_lab", "train", "--preset", "stamps", "--out", str(folder), "--quiet",
            *(f"--set={k}={v}" for k, v in settings.items()), *(f"--set={s}" for s in sets)]


def unseen_command(root: Path, folder: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "fnac_lab", "evaluate", "--checkpoint", str(folder / "checkpoints" / "best.pt"),
            "--testset", "vggss", "--data-root", str(root), "--annotations",
            str(root / STAMPS_LAYOUT["test_annotations"]), "--split-csv", str(root / f"{UNSEEN}.csv"),
            "--out", str(folder / UNSEEN), "--workers", str(workers), "--quiet"]


def run_logged(command: list[str], log: Path) -> None:
    """Run ``command``, its output appended to ``log``; a failure raises naming the log."""
    with open(log, "a", encoding="utf-8") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise FnacError(f"{' '.join(command[2:4])} exited with {code} (see {log})")


def point_row(point: StudyPoint, folder: Path, batch_size: int) -> dict:
    """The point's row of results.csv, read from its run's files."""
    summary = json.loads((folder / "summary.json").read_text())
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    unseen = json.loads((folder / UNSEEN / "scores.json").read_text())
    warmup_epochs = TrainConfig.from_dict(json.loads((folder / "config.json").read_text())).build_method().warmup_epochs
    last = history[-1]
    return {"visual_pretrain": "scratch", "class_bias_p": point.class_bias_p, "batch_size": batch_size,
            "fnac_strength": FORMS[point.form][0], "seed": point.seed, **{k: summary["test"][k] for k in
                                                                            ("ap50", "mean_ciou", "auc")},
            "best_epoch": summary["best_epoch"], **{k: last.get(k) for k in EFFECT_FN_AUROC},
            "fn_ratio": last.get("fn_ratio"),
            "train_seconds": last.get("train_seconds"), "status": "finished", "form": point.form,
            **{f"unseen_{k}": unseen[k] for k in ("ap50", "mean_ciou", "auc")},
            "warmup_loss": history[warmup_epochs - 1]["loss"] if warmup_epochs else None}


def run_study(out: str | Path, *, root: str | Path, seeds: Sequence[int], forms: Sequence[str] = tuple(FORMS),
              batch_size: int = 64, jobs: int = 1, workers: int = 2, sets: Sequence[str] = (),
              runner: Callable[[list[str], Path], None] = run_logged, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) the study into ``out`` and write ``out/results.csv``; returns its rows. A point that fails
    is listed with ``status`` failed and its error in ``out/NAME/error.txt``; the others still run."""
    root, out = Path(root), output_folder(out)
    if not (root / STAMPS_LAYOUT["cache_dir"] / "meta.json").is_file():
        raise FnacError(f"{root}: no stamps benchmark with its training cache there (make stamps-benchmark, or "
                        "fnac-lab stamps build --prepare --out ROOT)")
    points = study_points(seeds, forms)
    settings = {"root": str(root.resolve()), "batch_size": batch_size, "sets": list(sets)}
    recorded = out / "study.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != settings:
        raise FnacError(f"{out}: holds a study of other settings ({recorded}: {recorded.read_text().strip()}); "
                        "choose another --out")
    if not recorded.is_file() and any(out.iterdir()):
        raise FnacError(f"{out}: is not empty and holds no study; choose another --out")
    write_json(recorded, settings)

    def one(point: StudyPoint) -> dict:
        folder = out / point.name
        if not (folder / UNSEEN / "scores.json").is_file():
            folder.mkdir(exist_ok=True)
            t0 = time.perf_counter()
            try:
                runner(train_command(point, root, folder, batch_size, sets), folder / "train.log")
                runner(unseen_command(root, folder, workers), folder / "train.log")
            except FnacError as exc:
                atomic_write_text(folder / "error.txt", f"{exc}\n")
                return {"class_bias_p": point.class_bias_p, "seed": point.seed, "form": point.form,
                        "fnac_strength": FORMS[point.form][0], "status": "failed"}
            if progress:
                print(f"{point.name}: {time.perf_counter() - t0:.0f} s", flush=True)
        return point_row(point, folder, batch_size)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        rows = list(pool.map(one, points))
    results = pd.DataFrame(rows, columns=[*EFFECT_COLUMNS, *EXTRA_COLUMNS])
    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    return results


def study_tables(results: pd.DataFrame) -> str:
    """The tables of a study (docs/findings/stamps.md): FNAC's paired AP50 gains over the NCE twins on
    ``test_heard``, then on ``test_unseen_stamps`` (:func:`~fnac_lab.ablate.effects.paired_effects` of each
    split's scores)."""
    unseen = results.assign(**{k: results[f"unseen_{k}"] for k in ("ap50", "mean_ciou", "auc")})
    return (f"test_heard (training stamps in new pictures, new cuts of their sounds):\n\n"
            f"{effects_markdown(paired_effects(results)).rstrip()}\n\n"
            f"{UNSEEN} (held-out stamps of the seen classes):\n\n{effects_markdown(paired_effects(unseen)).rstrip()}")
