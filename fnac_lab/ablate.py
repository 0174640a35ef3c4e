"""Ablation sweeps: run a parameterised notebook through papermill once per grid point and collect the results.

A grid file (YAML)::

    notebook: notebooks/01_train.ipynb     # relative paths are taken from the current directory
    paper: distance                        # optional: the published table this sweep compares with
    base: {smoke: true}                    # parameters common to every point
    grid:                                  # the cartesian product of these axes
      distance: [l1, l2]
      weights:                             # an axis whose values are mappings sets several parameters at once
        - {w_fns_audio: 0, w_fns_visual: 0, w_tne: 0}
        - {w_fns_audio: 10, w_fns_visual: 10, w_tne: 10}

``grid`` may also be a list of such mappings (blocks): the points are then the union of the blocks' products,
each point once, so that a factor can be crossed with only some of the others.

Output layout::

    OUT/grid.json                     the resolved grid
    OUT/points/NAME/notebook.ipynb    the executed notebook of a point (kept, also when it failed)
    OUT/points/NAME/metrics.json      written by the notebook (its ``out_dir`` parameter is the point's folder)
    OUT/points/NAME/done.json         finished marker, written atomically after a successful run
    OUT/points/NAME/error.txt         why the point failed (removed when it later succeeds)
    OUT/results.csv                   one row per point: parameter columns, final metrics, status

A point whose ``done.json`` exists is skipped when the grid is run again; a failed point does not stop the
others and is run again next time (a training notebook resumes from its last checkpoint).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import queue
import re
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml
from tqdm.auto import tqdm

from .utils import FnacError, atomic_write_text, write_json

GRID_KEYS = ("notebook", "base", "grid", "out_param", "paper")
DONE, ERROR, METRICS = "done.json", "error.txt", "metrics.json"
#: Repository folders (a source checkout); the bundled notebooks and grid files live there.
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PaperTable:
    """Published figures for one ablation knob (REFERENCE section 7); ``columns`` hold percentages."""

    title: str
    knob: str
    values: tuple[Any, ...]
    columns: dict[str, tuple[float, ...]] = field(default_factory=dict)
    note: str = ""


PAPER_TABLES: dict[str, PaperTable] = {
    "fn_ratio": PaperTable(
        "Table S1: class-biased sampling, NCE pilot (VGGSound-144k, B = 128)", "class_bias_p",
        (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
        {"FN ratio": (39.27, 43.21, 46.86, 51.37, 55.83, 60.79),
         "Flickr cIoU": (79.93, 78.72, 78.32, 76.71, 75.91, 67.48),
         "VGG-SS cIoU": (36.11, 34.95, 34.91, 33.98, 33.94, 25.42)}),
    "warmup": PaperTable(
        "Warm-up epochs (VGG-Sound 10k)", "warmup_epochs", (0, 3, 5, 10),
        {"Flickr cIoU": (84.33, 85.74, 84.33, 83.53), "VGG-SS cIoU": (35.07, 37.29, 35.93, 37.61)}),
    "visual_dropout": PaperTable(
        "Visual dropout (VGG-Sound 10k)", "visual_dropout", (0.1, 0.3, 0.5, 0.7, 0.9),
        {"Flickr cIoU": (77.10, 81.12, 82.32, 84.73, 85.74), "VGG-SS cIoU": (35.76, 34.75, 36.43, 36.49, 37.29)}),
    "distance": PaperTable(
        "Distance D of the FNAC terms (VGG-Sound 10k)", "distance", ("l2", "smooth_l1", "l1"),
        {"Flickr cIoU": (80.72, 82.32, 85.74), "VGG-SS cIoU": (34.02, 34.47, 37.29)}),
    "audio_augment": PaperTable(
        "Audio augmentation (VGG-Sound 10k)", "audio_augment", (True, False),
        {"Flickr cIoU": (82.73, 85.74), "VGG-SS cIoU": (38.64, 37.29)}),
    "tne_threshold": PaperTable(
        "TNE threshold (VGG-Sound 10k)", "tne_threshold", (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, "soft"),
        {"Flickr cIoU": (81.92, 83.53, 82.73, 83.53, 85.74, 84.73, 83.13),
         "VGG-SS cIoU": (37.74, 38.32, 37.70, 37.29, 37.29, 34.49, 36.00)}),
    "batch_size": PaperTable(
        "Batch size", "batch_size", (), {},
        "The paper reports no table, only that FNAC's gains grow with the batch size and that at 64 or below "
        "it gives no gain."),
    "loss_weights": PaperTable(
        "FNS / TNE loss weights", "weights", (), {},
        "The paper uses 100 for each term and reports no sweep; from scratch, 100 can collapse training "
        "(REFERENCE section 9)."),
}


# -- grids -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridPoint:
    """One run: ``values`` (axis -> value, as in the grid) and the full notebook ``parameters``."""

    name: str
    values: dict[str, Any]
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Grid:
    notebook: Path
    base: dict[str, Any]
    blocks: tuple[dict[str, list[Any]], ...]  #: each block's axes; the points are the union of their products
    out_param: str = "out_dir"
    paper: str | None = None  #: key of :data:`PAPER_TABLES` this sweep compares with

    @property
    def axes(self) -> dict[str, list[Any]]:
        """Every axis of every block, with the values it takes anywhere (in file order)."""
        merged: dict[str, list[Any]] = {}
        for block in self.blocks:
            for name, values in block.items():
                merged.setdefault(name, [])
                merged[name].extend(v for v in values if v not in merged[name])
        return merged

    def points(self) -> list[GridPoint]:
        """Each block's cartesian product in file order (the last axis varies fastest); a point that an earlier
        block already holds (same parameters) is not repeated."""
        out, seen = [], set()
        for block in self.blocks:
            for combo in itertools.product(*block.values()):
                values = dict(zip(block, combo))
                params = dict(self.base)
                for value in combo:
                    if isinstance(value, Mapping):
                        params.update(value)
                params.update({k: v for k, v in values.items() if not isinstance(v, Mapping)})
                point = GridPoint(name=point_name(values, params), values=values, parameters=params)
                if point.name not in seen:
                    seen.add(point.name)
                    out.append(point)
        return out

    def to_dict(self) -> dict[str, Any]:
        grid = self.blocks[0] if len(self.blocks) == 1 else list(self.blocks)
        return {"notebook": str(self.notebook), "base": self.base, "grid": grid, "out_param": self.out_param,
                "paper": self.paper}


def value_label(value: Any) -> str:
    """A compact text form of an axis value (mappings as ``k=v,k=v``)."""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def point_name(values: Mapping[str, Any], parameters: Mapping[str, Any]) -> str:
    """Folder name of a point: its axis values, then a hash of all its parameters (so that a changed base or a
    changed value never reuses an old result)."""
    slug = "_".join(f"{k}={value_label(v)}" for k, v in values.items()) or "point"
    slug = re.sub(r"[^A-Za-z0-9._=,+-]+", "-", slug)[:80]
    digest = hashlib.sha1(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


def make_grid(notebook: str | Path, *, base: Mapping[str, Any] | None = None,
              grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]] | None = None,
              out_param: str = "out_dir", paper: str | None = None, source: str = "grid") -> Grid:
    """A validated :class:`Grid` (``source`` names the grid in error messages); ``grid`` is one mapping of axes
    or a list of them (blocks)."""
    nb = Path(notebook).expanduser()
    nb = nb if nb.is_absolute() else Path.cwd() / nb
    if not nb.is_file():
        raise FnacError(f"{source}: notebook {notebook} not found (relative paths are taken from {Path.cwd()})")
    base = dict(base or {})
    blocks = [grid or {}] if grid is None or isinstance(grid, Mapping) else list(grid)
    if not blocks:
        raise FnacError(f"{source}: 'grid' is an empty list of blocks")
    checked = []
    for k, block in enumerate(blocks):
        where = f"grid block {k + 1}" if len(blocks) > 1 else "grid"
        if not isinstance(block, Mapping):
            raise FnacError(f"{source}: {where} must be a mapping of axes, got {block!r}")
        axes = {str(name): values for name, values in block.items()}
        for name, values in axes.items():
            if not isinstance(values, list) or not values:
                raise FnacError(f"{source}: {where} axis {name!r} must be a non-empty list of values, got {values!r}")
        if out_param in axes:
            raise FnacError(f"{source}: {out_param!r} is set by the runner (each point writes into its own folder)")
        checked.append({name: list(values) for name, values in axes.items()})
    if out_param in base:
        raise FnacError(f"{source}: {out_param!r} is set by the runner (each point writes into its own folder)")
    if paper is not None and paper not in PAPER_TABLES:
        raise FnacError(f"{source}: paper {paper!r} is not one of {', '.join(PAPER_TABLES)}")
    return Grid(notebook=nb.resolve(), base=base, blocks=tuple(checked), out_param=out_param, paper=paper)


def load_grid(path: str | Path) -> Grid:
    """Read a grid file (keys ``notebook``, ``base``, ``grid``, optional ``out_param``)."""
    path = Path(path)
    if not path.is_file():
        raise FnacError(f"{path}: grid file not found")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise FnacError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(spec, dict):
        raise FnacError(f"{path}: expected a mapping with keys notebook, base, grid")
    unknown = [k for k in spec if k not in GRID_KEYS]
    if unknown:
        raise FnacError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(GRID_KEYS)})")
    if "notebook" not in spec:
        raise FnacError(f"{path}: missing the 'notebook' key")
    if spec.get("base") is not None and not isinstance(spec["base"], dict):
        raise FnacError(f"{path}: 'base' must be a mapping, got {spec['base']!r}")
    if spec.get("grid") is not None and not isinstance(spec["grid"], (dict, list)):
        raise FnacError(f"{path}: 'grid' must be a mapping of axes or a list of them, got {spec['grid']!r}")
    return make_grid(spec["notebook"], base=spec.get("base"), grid=spec.get("grid"),
                     out_param=spec.get("out_param", "out_dir"), paper=spec.get("paper"), source=str(path))


def check_parameters(grid: Grid) -> None:
    """Refuse parameters the notebook's ``parameters`` cell does not define (papermill would only warn)."""
    import papermill

    known = set(papermill.inspect_notebook(str(grid.notebook)))
    if not known:
        raise FnacError(f"{grid.notebook}: no cell tagged 'parameters'")
    used = set(grid.base) | {grid.out_param}
    for point in grid.points():
        used |= set(point.parameters)
    unknown = sorted(used - known)
    if unknown:
        hints = [f"{u!r}" + (f" (did you mean {near[0]!r}?)" if (near := difflib.get_close_matches(u, known, n=1)) else "")
                 for u in unknown]
        raise FnacError(f"{grid.notebook.name} has no parameter {', '.join(hints)}")


# -- running ----------------------------------------------------------------------------------------------------------


@dataclass
class PointOutcome:
    point: GridPoint
    folder: Path
    status: str  # "finished", "skipped" (finished earlier) or "failed"
    seconds: float = 0.0
    error: str = ""


@dataclass
class GridRun:
    results: pd.DataFrame
    outcomes: list[PointOutcome]
    out_dir: Path

    @property
    def failed(self) -> list[PointOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def _run_point(grid: Grid, point: GridPoint, folder: Path, *, kernel_name: str, device: str | None,
               timeout: float | None) -> PointOutcome:
    import papermill

    if (folder / DONE).is_file():
        return PointOutcome(point, folder, "skipped")
    folder.mkdir(parents=True, exist_ok=True)
    params = {**point.parameters, grid.out_param: str(folder)}
    if device is not None:
        params["device"] = device
    write_json(folder / "params.json", params)
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(str(grid.notebook), str(folder / "notebook.ipynb"), parameters=params,
                                   kernel_name=kernel_name, progress_bar=False, cwd=str(folder),
                                   execution_timeout=timeout)
        if not (folder / METRICS).is_file():
            raise FnacError(f"the notebook finished without writing {METRICS} into its {grid.out_param}")
    except Exception as exc:  # any failure of one point is recorded and the sweep goes on
        if isinstance(exc, papermill.PapermillExecutionError):
            message = f"{exc.ename}: {exc.evalue} (see {folder / 'notebook.ipynb'})"
        else:
            message = f"{type(exc).__name__}: {exc}"
        atomic_write_text(folder / ERROR, message + "\n\n" + traceback.format_exc())
        return PointOutcome(point, folder, "failed", time.perf_counter() - t0, message)
    seconds = time.perf_counter() - t0
    (folder / ERROR).unlink(missing_ok=True)
    write_json(folder / DONE, {"parameters": point.parameters, "seconds": round(seconds, 2)})
    return PointOutcome(point, folder, "finished", seconds)


def run_grid(grid: Grid | str | Path, out_dir: str | Path, *, jobs: int = 1, devices: Sequence[str] | None = None,
             kernel_name: str = "python3", timeout: float | None = None, progress: bool = True) -> GridRun:
    """Run every point of ``grid`` (a :class:`Grid` or a grid file) into ``out_dir`` and collect ``results.csv``.

    ``jobs`` points run at once; with ``devices`` (e.g. ``["cuda:0", "cuda:1"]``) each running point gets one
    of them as its ``device`` parameter and ``jobs`` defaults to their number. Points finished earlier are
    skipped; failures are recorded in ``error.txt`` and in the results, never raised.
    """
    grid = load_grid(grid) if isinstance(grid, (str, Path)) else grid
    check_parameters(grid)
    out = Path(out_dir).expanduser().resolve()  # kernels run inside their point's folder: paths must be absolute
    (out / "points").mkdir(parents=True, exist_ok=True)
    write_json(out / "grid.json", grid.to_dict())
    points = grid.points()
    if devices:
        jobs = len(devices)
    free: queue.Queue = queue.Queue()
    for d in (devices or [None] * max(1, jobs)):
        free.put(d)

    def work(point: GridPoint) -> PointOutcome:
        device = free.get()
        try:
            return _run_point(grid, point, out / "points" / point.name, kernel_name=kernel_name, device=device,
                              timeout=timeout)
        finally:
            free.put(device)

    outcomes: list[PointOutcome] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for outcome in tqdm(pool.map(work, points), total=len(points), desc="grid points", disable=not progress):
            outcomes.append(outcome)
    results = collect_results(grid, out, outcomes)
    return GridRun(results=results, outcomes=outcomes, out_dir=out)


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of a ``metrics.json`` with nested mappings joined by ``_`` (``baseline.ap50`` -> ``baseline_ap50``);
    lists and the ``config`` entry are left out."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key == "config" or isinstance(value, (list, tuple)):
            continue
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, f"{prefix}{key}_"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def collect_results(grid: Grid, out_dir: str | Path, outcomes: Sequence[PointOutcome] | None = None) -> pd.DataFrame:
    """``results.csv``: one row per point with its axis values (mappings expanded into their parameters), the
    flattened metrics of its ``metrics.json``, its status and error. Written atomically into ``out_dir``."""
    out = Path(out_dir)
    by_name = {o.point.name: o for o in outcomes or []}
    rows = []
    for point in grid.points():
        folder = out / "points" / point.name
        row: dict[str, Any] = {}
        for axis, value in point.values.items():
            row[axis] = value_label(value) if isinstance(value, Mapping) else value
            if isinstance(value, Mapping):
                row.update(value)
        outcome = by_name.get(point.name)
        finished = (folder / DONE).is_file()
        row["status"] = outcome.status if outcome else ("finished" if finished else "not run")
        row["error"] = outcome.error if outcome and outcome.status == "failed" else ""
        if finished and (folder / METRICS).is_file():
            row.update(flatten_metrics(json.loads((folder / METRICS).read_text())))
        row["folder"] = str(folder)
        rows.append(row)
    table = pd.DataFrame(rows)
    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    return table


# -- bundled notebooks and grids ------------------------------------------------------------------------------------


def bundled_path(*parts: str) -> Path:
    """A file of the source checkout (``notebooks/...`` or ``data/grids/...``); a clear error when absent."""
    path = REPO_ROOT.joinpath(*parts)
    if not path.exists():
        raise FnacError(f"{path} not found: the notebooks and grid files come with the source checkout; "
                        f"pass an explicit path instead")
    return path


def bundled_grid(name: str, *, notebook: str | Path | None = None, base: Mapping[str, Any] | None = None) -> Grid:
    """The grid file ``data/grids/NAME.yaml`` with its notebook resolved from the checkout (or ``notebook``) and
    ``base`` parameters added on top of the file's."""
    path = bundled_path("data", "grids", f"{name}.yaml")
    spec = yaml.safe_load(path.read_text())
    nb = Path(notebook) if notebook is not None else REPO_ROOT / spec["notebook"]
    return make_grid(nb, base={**(spec.get("base") or {}), **(base or {})}, grid=spec.get("grid"),
                     out_param=spec.get("out_param", "out_dir"), paper=spec.get("paper"), source=str(path))


# -- comparison with the paper --------------------------------------------------------------------------------------


def _value_key(value: Any) -> str:
    """A knob value as a comparable string: numbers in shortest form (``0`` and ``0.0`` alike)."""
    text = value_label(value)
    if text in ("True", "False"):
        return text
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def paper_comparison(results: pd.DataFrame, knob: str, paper: PaperTable | None,
                     metrics: Sequence[str] = ("ap50", "mean_ciou", "auc")) -> pd.DataFrame:
    """One row per knob value (ours and the paper's, outer-joined): our metrics (0-1) beside the paper's columns (%)."""
    ours = results.assign(**{knob: results[knob].map(_value_key)}).set_index(knob)
    ours = ours[[m for m in metrics if m in ours]].add_prefix("ours: ")
    if paper is None or not paper.values:
        return ours
    published = pd.DataFrame({f"paper: {c} (%)": v for c, v in paper.columns.items()},
                             index=pd.Index([_value_key(v) for v in paper.values], name=knob))
    order = list(dict.fromkeys([*ours.index, *published.index]))
    return ours.join(published, how="outer").loc[order]


def sweep_statement(results: pd.DataFrame, knob: str, metric: str = "ap50") -> str:
    """Which value of ``knob`` scored best and worst on ``metric``, and whether the spread exceeds the noise of a
    difference between two points (``2 * sqrt(2) * SE``, ``SE`` the binomial standard error of one AP50)."""
    done = results.dropna(subset=[metric]) if metric in results else results.iloc[0:0]
    if len(done) < 2:
        return f"Fewer than two finished points: nothing to compare for {knob}."
    best, worst = done.loc[done[metric].idxmax()], done.loc[done[metric].idxmin()]
    spread = best[metric] - worst[metric]
    p, n = done[metric].mean(), done["n_samples"].iloc[0] if "n_samples" in done else None
    text = (f"{knob}: best {metric} {best[metric]:.3f} at {best[knob]}, worst {worst[metric]:.3f} at {worst[knob]} "
            f"(spread {spread:.3f}")
    if n and metric == "ap50":
        noise = 2 * math.sqrt(2 * p * (1 - p) / n)
        verdict = "larger" if spread > noise else "not larger"
        text += f", {verdict} than twice the standard error of a difference of two points: {noise:.3f} at {int(n)} test samples"
    return text + ")."
