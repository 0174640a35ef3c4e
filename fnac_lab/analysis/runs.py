"""The models and data a notebook looks at: a notebook run's configuration and its NCE twin, a trained pair of
models (from checkpoints, a training folder, or trained on demand), and per-sample localisations."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ..checkpoint import build_model, load_checkpoint
from ..config import BUILTIN, TrainConfig, preset
from ..methods import BASELINE, BASELINE_LABEL, METHODS, UNTRAINED
from ..methods.settings import dotted
from ..data.contracts import ClassNamed, WithDistractors
from ..data.real import LabelledSplit
from ..datasets import datasets_for_split
from ..scoring import EvalResult, evaluate_model
from ..metrics import vggss_box_to_pixels
from ..models import Localiser
from ..train import train
from ..utils import FnacError

#: The FNAC weights that ``fnac_strength`` sets.
FNAC_WEIGHTS = ("fnac.w_fns_audio", "fnac.w_fns_visual", "fnac.w_tne")


def notebook_config(preset_name: str, *, smoke: bool, method: str | None = None,
                    overrides: Mapping[str, Any] | None = None, fnac_strength: float | None = None
                    ) -> tuple[TrainConfig, dict[str, Any]]:
    """The configuration of a notebook run: the ``smoke`` preset when ``smoke`` else ``preset_name``, trained with
    ``method`` (None: the preset's), with ``overrides`` (settings by name, ``method.option`` for a method's options)
    applied on top.

    ``fnac_strength``, when given, sets all three FNAC weights to that many times the batch size: the terms average
    over ``B x B`` entries, so their pull against NCE goes with ``w / B`` (the paper's 100 / 128 = 0.78). Returns
    the configuration and the applied settings (the method first when given)."""
    name = "smoke" if smoke else preset_name
    applied = {**({"method": method} if method is not None else {}), **dict(overrides or {})}
    cfg = preset(name, **applied)
    if fnac_strength is not None:
        if cfg.method != "fnac":
            raise FnacError(f"fnac_strength sets the FNAC weights, and this run's method is {cfg.method!r}")
        named = [k for k in FNAC_WEIGHTS if k in dotted(applied)]
        if named:
            raise FnacError(f"fnac_strength and {', '.join(named)} both set the FNAC weights; set one of them")
        weights = {k: float(fnac_strength) * cfg.batch_size for k in FNAC_WEIGHTS}
        cfg = cfg.replace(**weights)
        applied = {**applied, **weights}
    return cfg, applied


def nce_twin(cfg: TrainConfig) -> TrainConfig:
    """The same configuration trained with the baseline method (:data:`~fnac_lab.methods.BASELINE`, EZ-VSL's NCE)."""
    return cfg.replace(method=BASELINE)


def seed_list(cfg: TrainConfig, n_seeds: int) -> list[int]:
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be at least 1, got {n_seeds}")
    return [cfg.seed + i for i in range(n_seeds)]


def evaluation_split(cfg: TrainConfig, split: str = "test"):
    """One evaluation split of ``cfg``'s data. The built-in splits are generated from per-split seeds, so the
    training split is cut to one batch here (generating it in full would take minutes and change nothing). A real
    split comes as a :class:`~fnac_lab.data.real.LabelledSplit`: the built-in data's batches, integer labels and
    class names, of the real frames and recordings; its validation and test splits need no training set (an
    imported checkpoint comes without one)."""
    if cfg.dataset == BUILTIN:
        cfg = cfg.replace(n_train=cfg.batch_size, **({} if split == "val" else {"n_val": 1}))
    datasets = datasets_for_split(cfg, split)
    if split not in datasets:
        raise FnacError(f"split {split!r} does not exist for this configuration (available: {', '.join(datasets)})")
    if cfg.dataset == BUILTIN:
        return datasets[split]
    name = cfg.testset if split != "train" else cfg.trainset
    return LabelledSplit(datasets[split], name=f"{name} {split}")


def class_count(cfg: TrainConfig, data) -> int:
    """The classes a notebook's data holds: the configuration's ``n_classes`` on the built-in data, the distinct
    classes of the split on real data."""
    return len(data.class_names) if isinstance(data, ClassNamed) else cfg.n_classes


#: Class names that :func:`describe_data` writes out (the rest counted).
NAMED_CLASSES = 12


def describe_data(cfg: TrainConfig, split: str, data) -> str:
    """The line in which a notebook says what it looks at: the data, its split, samples and classes (a real
    split's first :data:`NAMED_CLASSES` class names too), ``tau`` and the TNE threshold."""
    threshold = cfg.build_method().foreground_threshold
    threshold = threshold if threshold is not None else "soft"
    names = data.class_names if isinstance(data, ClassNamed) else None
    if names is None:
        what = f"{cfg.dataset} {split} split, {len(data)} samples, {cfg.n_classes} classes"
    else:
        root = cfg.test_root if split != "train" else (cfg.cache_dir or cfg.train_root)
        shown = ", ".join(names[:NAMED_CLASSES]) + (f" and {len(names) - NAMED_CLASSES} more"
                                                     if len(names) > NAMED_CLASSES else "")
        what = f"real {split} split ({data.name} of {root}), {len(data)} samples, {len(names)} classes: {shown}"
    return f"data: {what}; tau {cfg.tau}, TNE threshold {threshold}"


@dataclass
class ModelPair:
    """The FNAC model and its NCE baseline (either may be missing), the configuration of the data they are
    evaluated on, and a sentence saying where they came from."""

    models: dict[str, Localiser]
    cfg: TrainConfig
    source: str


def run_folder(cfg: TrainConfig) -> str:
    """The folder of a notebook run inside its output directory: its method's name (``fnac/``; the twin's ``nce/``)."""
    return cfg.method


def configured_run_folder(out_dir: str | Path) -> Path:
    """The training folder of the configured run of a ``01_train`` output directory: the folder of the method it
    holds besides its twin's (:data:`~fnac_lab.methods.BASELINE`), or the twin's when the run is its own twin."""
    found = [name for name in METHODS if (Path(out_dir) / name).is_dir()]
    own = [name for name in found if name != BASELINE] or found
    if len(own) != 1:
        held = f"holds {', '.join(own)}" if own else f"holds no folder of a method ({', '.join(METHODS)})"
        raise FnacError(f"{out_dir}: {held}; a 01_train out_dir holds one run and its twin")
    return Path(out_dir) / own[0]


def _run_dir_checkpoints(run_dir: Path) -> dict[str, Path]:
    """The ``best.pt`` of the configured run (named by its method's label) and of its twin
    (:data:`~fnac_lab.methods.BASELINE_LABEL`) in a ``01_train`` output directory."""
    main = configured_run_folder(run_dir)
    paths = {METHODS[main.name].label: main, **({BASELINE_LABEL: run_dir / BASELINE} if main.name != BASELINE else {})}
    found = {name: folder / "checkpoints" / "best.pt" for name, folder in paths.items()
             if (folder / "checkpoints" / "best.pt").is_file()}
    if not found:
        raise FnacError(f"{run_dir}: no {main.name}/checkpoints/best.pt (a 01_train out_dir?)")
    return found


def load_or_train_model_pair(*, checkpoint: str | Path | None = None, baseline_checkpoint: str | Path | None = None,
                             run_dir: str | Path | None = None, preset_name: str = "demo", smoke: bool = False,
                             out_dir: str | Path | None = None, progress: bool = True) -> ModelPair:
    """The models a notebook looks at, by the first rule that applies:

    1. ``checkpoint`` and / or ``baseline_checkpoint``: those checkpoint files;
    2. ``run_dir``: the ``best.pt`` of each method's folder of a ``01_train`` output directory (``fnac/``, ``nce/``);
    3. ``smoke``: fresh, untrained models of the ``smoke`` preset, named with :data:`UNTRAINED` after them;
    4. otherwise: train ``preset_name`` and its NCE twin into ``out_dir``, or reuse them where they are trained.

    Models are named by their method's label (``FNAC``); the twin is :data:`~fnac_lab.methods.BASELINE_LABEL`.
    """
    paths: dict[str, Path] = {}
    if checkpoint is not None or baseline_checkpoint is not None:
        paths = {name: Path(p) for name, p in ((None, checkpoint), (BASELINE_LABEL, baseline_checkpoint))
                 if p is not None}
        source = "checkpoints " + ", ".join(str(p) for p in paths.values())
    elif run_dir is not None:
        paths = _run_dir_checkpoints(Path(run_dir))
        source = f"the best checkpoints of the run in {run_dir}"
    if paths:
        models, cfgs = {}, {}
        for name, path in paths.items():
            model, cfg, _ = load_checkpoint(path)
            name = name or cfg.build_method().label
            models[name], cfgs[name] = model, cfg
        main = next((c for name, c in cfgs.items() if name != BASELINE_LABEL), next(iter(cfgs.values())))
        return ModelPair(models=models, cfg=main, source=source)
    if smoke:
        cfg = preset("smoke")
        models = {}
        for i, name in enumerate((cfg.build_method().label, BASELINE_LABEL)):
            torch.manual_seed(cfg.seed + i)
            models[name + UNTRAINED] = build_model(cfg).eval()
        return ModelPair(models=models, cfg=cfg,
                         source="fresh, untrained models of the smoke preset (no checkpoint given)")
    if out_dir is None:
        raise FnacError("no checkpoint, run_dir or out_dir given: nothing to load and nowhere to train")
    cfg = preset(preset_name)
    pair = {cfg.build_method().label: cfg, BASELINE_LABEL: nce_twin(cfg)}
    finished = all((Path(out_dir) / run_folder(c) / "summary.json").is_file() for c in pair.values())
    models = {name: train(c, Path(out_dir) / run_folder(c), progress=progress).model.eval() for name, c in pair.items()}
    how = "reused from" if finished else "trained into"
    return ModelPair(models=models, cfg=cfg, source=f"the {preset_name!r} preset and its NCE twin, {how} {out_dir}")


#: The environment variable that names the folder the notebooks write their runs into (``make lab`` sets it to
#: ``runs/`` at the repository's root, outside the notebooks' folder).
RUNS_VARIABLE = "FNAC_LAB_RUNS"


def runs_root() -> Path:
    """Where the notebooks write their runs by default: ``$FNAC_LAB_RUNS`` when set, else ``runs`` under the
    working directory (a notebook's kernel starts in the notebook's folder)."""
    value = os.environ.get(RUNS_VARIABLE)
    return Path(value).expanduser() if value else Path.cwd() / "runs"


def shared_run_dir(preset_name: str, root: str | Path | None = None) -> Path:
    """The default training folder of the analysis notebooks (03, 04, 05) for a preset: ``analysis-<preset>`` in
    ``root`` (default: :func:`runs_root`), so that the first notebook trains the pair and the next ones reuse it."""
    return Path(root if root is not None else runs_root()) / f"analysis-{preset_name}"


def localise(model: Localiser, dataset, *, batch_size: int = 64, device: torch.device | str = "cpu",
             progress: bool = False) -> EvalResult:
    """Maps ``[N, 224, 224]`` and per-sample cIoU of a split (the benchmark evaluation, maps kept)."""
    return evaluate_model(model, dataset, batch_size=batch_size, device=device, keep_maps=True, reference_maps=False,
                          progress=progress)


def best_worst(cious, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` highest cIoUs (descending) and the ``k`` lowest (ascending); ties by index."""
    values = np.asarray(cious, dtype=np.float64)
    order = np.lexsort((np.arange(len(values)), values))  # ascending value, then index
    best = np.lexsort((np.arange(len(values)), -values))[:k]
    return best, order[:k]


PEAK_OUTCOMES = ("sounding object", "distractor", "background")


def peak_outcome(maps: np.ndarray | torch.Tensor, boxes, distractor_boxes) -> np.ndarray:
    """Where each map's maximum falls: inside the sounding object's box (checked first), inside a distractor's
    box, or on the background. Boxes are normalised ``[x0, y0, x1, y1]`` (distractors padded with -1)."""
    maps = torch.as_tensor(maps)
    size = maps.shape[-1]
    flat = maps.flatten(1).argmax(dim=1)
    rows, cols = (flat // size).tolist(), (flat % size).tolist()
    out = []
    for i, (r, c) in enumerate(zip(rows, cols)):
        def inside(box) -> bool:
            x0, y0, x1, y1 = vggss_box_to_pixels(list(box), size)
            return y0 <= r < y1 and x0 <= c < x1

        if inside(boxes[i]):
            out.append(PEAK_OUTCOMES[0])
        elif any(inside(b) for b in distractor_boxes[i] if min(b) >= 0):
            out.append(PEAK_OUTCOMES[1])
        else:
            out.append(PEAK_OUTCOMES[2])
    return np.array(out)


#: Where a map's maximum can fall on real data, whose frames annotate the sounding object alone.
REAL_PEAK_OUTCOMES = (PEAK_OUTCOMES[0], PEAK_OUTCOMES[2])


def has_distractors(data) -> bool:
    """Whether ``data`` knows its frames' silent objects (the built-in data's distractor boxes; real data does not)."""
    return isinstance(data, WithDistractors)


def peak_kinds(data) -> tuple[str, ...]:
    """The outcomes :func:`peak_outcomes` can give on ``data``: :data:`PEAK_OUTCOMES`, or without distractors
    :data:`REAL_PEAK_OUTCOMES`."""
    return PEAK_OUTCOMES if has_distractors(data) else REAL_PEAK_OUTCOMES


def peak_on_ground_truth(maps: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per map ``[N, H, W]``: whether the ground truth ``[N, H, W]`` is positive at the map's maximum (the first
    one in row-major order on ties)."""
    maps, gt = torch.as_tensor(maps), torch.as_tensor(gt)
    flat = maps.flatten(1).argmax(dim=1)
    return (gt.flatten(1).gather(1, flat[:, None])[:, 0] > 0).numpy()


def peak_outcomes(data, maps: np.ndarray | torch.Tensor, *, chunk: int = 256) -> np.ndarray:
    """Where the maximum of each of the maps ``[N, 224, 224]`` of the samples of ``data`` (in order) falls: with
    distractor boxes :func:`peak_outcome` of the batch's boxes; otherwise (real data) the sounding object where the
    ground truth covers it, else the background (the ground truth read ``chunk`` samples at a time)."""
    n = len(maps)
    if has_distractors(data):
        batch = data.batch(list(range(n)))
        return peak_outcome(maps, batch["box"], batch["distractor_boxes"])
    out = []
    for start in range(0, n, chunk):
        idx = list(range(start, min(start + chunk, n)))
        on = peak_on_ground_truth(torch.as_tensor(maps[start:start + len(idx)]), data.gt_maps(idx))
        out.extend(PEAK_OUTCOMES[0] if v else PEAK_OUTCOMES[2] for v in on)
    return np.array(out)


def sample_table(data) -> pd.DataFrame:
    """One row per sample of ``data``, in order: ``id``, ``label`` (the integer code) and ``class`` (its name)."""
    labels = torch.as_tensor(data.labels)
    return pd.DataFrame({"id": list(data.ids), "label": labels.numpy(),
                         "class": [data.class_name(int(c)) for c in labels]})
