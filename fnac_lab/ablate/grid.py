"""Grids of notebook parameters: a grid file, its points, and the bundled grids of ``data/grids``.

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

The file is read with ``yaml.safe_load`` after its size and its expanded size are checked
(:func:`fnac_lab.utils.read_yaml`). A point is what it runs: the notebook (its path and the hash of its code cells,
:attr:`Grid.notebook_sha256`) and the parameters (the folder name's hash).

Values of configuration settings are checked and, where spelled in another type, converted to the setting's type
(:func:`canonical_value`: ``seed: ["1"]`` is ``seed: [1]``); points whose settings agree once converted (``1`` and
``"1"``, ``0`` and ``0.0`` of a float setting) are one point.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat

from ..config import ConfigError, TrainConfig, coerce_setting, setting_types
from ..paper import PAPER_TABLES
from ..utils import FnacError, describe, read_yaml

GRID_KEYS = ("notebook", "base", "grid", "out_param", "paper")
#: Repository folders (a source checkout); the bundled notebooks and grid files live there.
REPO_ROOT = Path(__file__).resolve().parents[2]


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
    #: sha256 of the notebook's code cells (:func:`notebook_sha256`): with ``notebook``, what every point runs
    notebook_sha256: str = ""

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
                key = settings_key(params)
                if key not in seen:
                    seen.add(key)
                    out.append(GridPoint(name=point_name(values, params), values=values, parameters=params))
        return out

    @property
    def runs(self) -> dict[str, str]:
        """What runs every point: the notebook's path and the hash of its code cells."""
        return {"notebook": str(self.notebook), "notebook_sha256": self.notebook_sha256}

    def to_dict(self) -> dict[str, Any]:
        """The grid as a grid file holds it (:func:`load_grid` reads it back)."""
        grid = self.blocks[0] if len(self.blocks) == 1 else list(self.blocks)
        return {"notebook": str(self.notebook), "base": self.base, "grid": grid, "out_param": self.out_param,
                "paper": self.paper}

    def record(self) -> dict[str, Any]:
        """What a grid's output folder records of it (``grid.json``): the grid, the hash of the notebook's code cells
        and the names of its points."""
        return {**self.to_dict(), **self.runs, "points": [p.name for p in self.points()]}


def notebook_sha256(path: Path, source: str = "grid") -> str:
    """sha256 of a notebook's code cells, in order: what a run of it computes. Outputs, metadata and prose leave it
    unchanged; a file that is not a Jupyter notebook is refused with one line."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises NotJSONError, ValidationError, UnicodeDecodeError, ...
        raise FnacError(f"{source}: notebook {path} is not a Jupyter notebook ({describe(exc)})") from None
    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.encode() + b"\0")
    return digest.hexdigest()


#: The Python types a grid value of a setting of each type may already have (YAML writes 0 for the float 0.0).
_CANONICAL = {int: (int,), float: (float, int), bool: (bool,), str: (str,)}


def canonical_value(name: str, value: Any) -> Any:
    """A grid value of the :class:`~fnac_lab.config.TrainConfig` setting ``name``, converted to the setting's type
    when it has another (``"1"`` for an int: 1; ``"0.5"`` for a float: 0.5), or :class:`ConfigError` when it cannot be.

    Values already of the type (also an int for a float), the words standing for None (``soft``, ``none``) and the
    booleans a text setting accepts (``audio_augment: true``) stay as written, so the names of existing points do not
    change. A mapping (an axis setting several parameters) has each of its values converted; other parameters (the
    notebook's own) are left alone."""
    if isinstance(value, Mapping):
        return {k: canonical_value(str(k), v) for k, v in value.items()}
    types = setting_types(TrainConfig)
    if name not in types or value is None:
        return value
    tp = types[name][0]
    if type(value) in _CANONICAL[tp]:
        return value
    coerced = coerce_setting(name, value)
    return value if coerced is None or (tp is str and isinstance(value, bool)) else coerced


def settings_key(parameters: Mapping[str, Any]) -> str:
    """What a point runs, whatever the spelling of its values: the parameters with every setting fully converted to
    its type (``0`` and ``0.0``, ``soft`` and None, ``audio_augment`` true and ``per_axis`` agree)."""
    types = setting_types(TrainConfig)
    full = {k: coerce_setting(k, v) if k in types else v for k, v in parameters.items()}
    return json.dumps(full, sort_keys=True, default=str)


def _canonical_axes(axes: Mapping[str, list[Any]], where: str) -> dict[str, list[Any]]:
    """Each axis's values converted by :func:`canonical_value`; a value that cannot be is refused with one line."""
    out = {}
    for name, values in axes.items():
        try:
            out[name] = [canonical_value(name, v) for v in values]
        except ConfigError as exc:
            raise FnacError(f"{where} axis {name!r}: {exc}") from None
    return out


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
        checked.append(_canonical_axes(axes, f"{source}: {where}"))
    if out_param in base:
        raise FnacError(f"{source}: {out_param!r} is set by the runner (each point writes into its own folder)")
    try:
        base = {name: canonical_value(name, value) for name, value in base.items()}
    except ConfigError as exc:
        raise FnacError(f"{source}: base: {exc}") from None
    if paper is not None and paper not in PAPER_TABLES:
        raise FnacError(f"{source}: paper {paper!r} is not one of {', '.join(PAPER_TABLES)}")
    return Grid(notebook=nb.resolve(), base=base, blocks=tuple(checked), out_param=out_param, paper=paper,
                notebook_sha256=notebook_sha256(nb, source))


def load_grid(path: str | Path) -> Grid:
    """Read a grid file (keys ``notebook``, ``base``, ``grid``, optional ``out_param``)."""
    path = Path(path)
    if not path.is_file():
        raise FnacError(f"{path}: grid file not found")
    spec = read_yaml(path)
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


#: The notebook parameter that takes configuration settings by name (notebooks/01_train.ipynb).
OVERRIDES = "overrides"


def parameter_names(grid: Grid) -> set[str]:
    """The parameters of the grid's notebook (its cell tagged ``parameters``); none is refused in one line."""
    import papermill

    known = set(papermill.inspect_notebook(str(grid.notebook)))
    if not known:
        raise FnacError(f"{grid.notebook}: no cell tagged 'parameters'")
    return known


def notebook_parameters(parameters: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """What papermill passes for a point's ``parameters`` to a notebook with the parameters ``known``: its own
    parameters as they are, and, when it takes settings through :data:`OVERRIDES`, every configuration setting it has
    no parameter of gathered into that mapping (``seed``, ``w_tne``, ``fnac.w_tne``). Grid files name settings
    directly, so a point's name and results stay those of the grid file."""
    if OVERRIDES not in known:
        return dict(parameters)
    types = setting_types(TrainConfig)
    own = {k: v for k, v in parameters.items() if k in known or k not in types}
    settings = {k: v for k, v in parameters.items() if k not in own}
    merged = {**dict(own.get(OVERRIDES) or {}), **settings}
    return {**own, **({OVERRIDES: merged} if merged else {})}


def check_parameters(grid: Grid) -> None:
    """Refuse parameters the notebook does not take (papermill would only warn): a name that is neither a parameter
    of its ``parameters`` cell nor, for a notebook that takes :data:`OVERRIDES`, a configuration setting."""
    known = parameter_names(grid)
    used = set(notebook_parameters(grid.base, known)) | {grid.out_param}
    for point in grid.points():
        used |= set(notebook_parameters(point.parameters, known))
    unknown = sorted(used - known)
    if unknown:
        hints = [f"{u!r}" + (f" (did you mean {near[0]!r}?)" if (near := difflib.get_close_matches(u, known, n=1)) else "")
                 for u in unknown]
        raise FnacError(f"{grid.notebook.name} has no parameter {', '.join(hints)}")


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
    spec = read_yaml(path)
    nb = Path(notebook) if notebook is not None else REPO_ROOT / spec["notebook"]
    return make_grid(nb, base={**(spec.get("base") or {}), **(base or {})}, grid=spec.get("grid"),
                     out_param=spec.get("out_param", "out_dir"), paper=spec.get("paper"), source=str(path))
