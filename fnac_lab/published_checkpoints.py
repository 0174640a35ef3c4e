"""Checkpoints released with the published code, turned into workbench checkpoints.

FNAC's training script (and EZ-VSL's, which it extends) saves one dict per checkpoint: ``model`` (the state dict,
every key behind ``module.`` when trained under DistributedDataParallel), ``optimizer``, ``epoch``, ``best_cIoU``
(the published evaluator's AP50 on the test set) and ``best_Auc``, and no configuration. The published model names
its four parts ``imgnet`` (torchvision's ResNet-18 without its pooling and classifier), ``img_proj`` (the 1x1
projection), ``audnet`` (a one-channel ResNet-18, max-pooled) and ``aud_proj`` (the linear projection); inside them
the names are torchvision's, which timm's ResNet shares. :func:`import_published` reads such a file as data only,
renames its keys to this workbench's, checks every key and shape against the model a preset describes, and writes
a checkpoint that :func:`fnac_lab.checkpoint.load_checkpoint` reads, with the configuration the published scripts
trained with and a record of where it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import build_model, read_checkpoint
from .config import TrainConfig, preset
from .paper import PARITY_TOLERANCE, PUBLISHED_CHECKPOINTS
from .utils import FnacError, UnsafeFileError, atomic_torch_save, atomic_write_text, describe, load_torch_file

#: The published model's parts and the workbench's modules that hold the same weights.
PUBLISHED_PREFIXES: dict[str, str] = {
    "imgnet.": "visual.backbone.", "img_proj.": "visual.proj.", "audnet.": "audio.backbone.", "aud_proj.": "audio.proj.",
}
#: What DistributedDataParallel puts before every key of the model it wraps.
DDP_PREFIX = "module."
#: The imported checkpoint and its record of origin, inside ``--out``.
CHECKPOINT_FILE, SOURCE_FILE = "checkpoint.pt", "source.json"

#: The numpy scalars a published file holds besides tensors (``best_cIoU`` and ``best_Auc`` are numpy floats), by
#: the names numpy 2 and numpy 1 pickle them under: plain values, rebuilt without calling anything else.
_NUMPY_SCALARS = [np._core.multiarray.scalar, (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype,
                  *(type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_))]


@dataclass(frozen=True)
class PublishedFormat:
    """A published code base whose checkpoints can be imported: what it is, the workbench method its training loss
    is, and the settings its scripts trained with where they differ from the preset's."""

    description: str
    method: str
    settings: dict[str, Any] = field(default_factory=dict)


#: The formats ``fnac-lab import-checkpoint --format`` reads. Both save the same dict and the same model; EZ-VSL
#: trains with its NCE loss alone and has no dropout.
PUBLISHED_FORMATS: dict[str, PublishedFormat] = {
    "fnac_avl": PublishedFormat("FNAC (Sun et al., CVPR 2023), github.com/OpenNLPLab/FNAC_AVL", "fnac"),
    "ezvsl": PublishedFormat("EZ-VSL (Mo and Morgado, ECCV 2022), github.com/stoneMo/EZ-VSL", "nce",
                             {"visual_dropout": 0.0}),
}


@dataclass(frozen=True)
class ImportedCheckpoint:
    """What :func:`import_published` wrote: the checkpoint file, its configuration and its record of origin."""

    path: Path
    config: TrainConfig
    source: dict[str, Any]


def read_published(path: str | os.PathLike) -> dict[str, Any]:
    """The dict of a released checkpoint, read as data only: tensors, plain values and numpy scalars. Anything
    else named in the file (code a pickle would run) is refused with :class:`fnac_lab.utils.UnsafeFileError`."""
    path = Path(path)
    if not path.is_file():
        raise FnacError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(_NUMPY_SCALARS):
            state = load_torch_file(path)
    except UnsafeFileError:
        raise
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise FnacError(f"{path}: not a readable checkpoint ({describe(exc)})") from None
    if isinstance(state, dict) and "config" in state:
        raise FnacError(f"{path}: a fnac-lab checkpoint already (it holds its configuration); evaluate it directly")
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict) or not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise FnacError(f"{path}: not a checkpoint of the published code (a dict whose 'model' is a state dict)")
    return state


def workbench_keys(published: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], *, where: str,
                   model: str) -> dict[str, torch.Tensor]:
    """``published`` (a released state dict) under the workbench's names, ``module.`` stripped; every key and shape
    checked against ``expected`` (the state dict of the model it must fit). The first mismatch is named in one line,
    by its published name; ``where`` names the file and ``model`` the model in that line."""
    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in published.items():
        name = key[len(DDP_PREFIX):] if key.startswith(DDP_PREFIX) else key
        prefix = next((p for p in PUBLISHED_PREFIXES if name.startswith(p)), None)
        if prefix is None:
            raise FnacError(f"{where}: key {key!r} belongs to no part of the published model (expected names that "
                            f"begin {', '.join(PUBLISHED_PREFIXES)})")
        ours = PUBLISHED_PREFIXES[prefix] + name[len(prefix):]
        renamed[ours], origin[ours] = tensor, key
    extra = [k for k in renamed if k not in expected]
    missing = [k for k in expected if k not in renamed]
    reshaped = [k for k in renamed if k in expected and renamed[k].shape != expected[k].shape]
    if extra:
        raise FnacError(f"{where}: key {origin[extra[0]]!r} is not in {model} ({len(extra)} such keys)")
    if missing:
        published_name = next(p for p, o in PUBLISHED_PREFIXES.items() if missing[0].startswith(o))
        name = published_name + missing[0][len(PUBLISHED_PREFIXES[published_name]):]
        raise FnacError(f"{where}: key {name!r} of {model} is missing ({len(missing)} missing keys)")
    if reshaped:
        key = reshaped[0]
        raise FnacError(f"{where}: key {origin[key]!r} has shape {list(renamed[key].shape)}, {model} has "
                        f"{list(expected[key].shape)} ({len(reshaped)} keys of other shapes)")
    return renamed


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """A numpy scalar of a released file as the Python number it holds; other values unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def source_record(path: Path, state: dict[str, Any], fmt: str, trained_on: str | None) -> dict[str, Any]:
    """Where an imported checkpoint came from: the file's name and SHA-256, the format, what the file says of its
    own training (its last epoch, and its best scores as the published script recorded them on its test set), and
    the published VGG-SS figures of the released checkpoint trained on ``trained_on`` (percent), if there is one."""
    row = PUBLISHED_CHECKPOINTS.get(trained_on) if fmt == "fnac_avl" else None
    return {
        "file": path.name, "sha256": file_sha256(path), "format": fmt,
        "description": PUBLISHED_FORMATS[fmt].description, "trained_on": trained_on,
        "in_file": {k: _plain(state[k]) for k in ("epoch", "best_cIoU", "best_Auc") if k in state},
        "published_vggss": None if row is None else {"ap50": row.vggss_ap50, "auc": row.vggss_auc},
    }


def import_published(path: str | os.PathLike, out: str | os.PathLike, *, fmt: str = "fnac_avl",
                     preset_name: str = "paper", trained_on: str | None = None,
                     overrides: dict[str, Any] | None = None) -> ImportedCheckpoint:
    """Write ``out/checkpoint.pt`` (and ``out/source.json``) from the released checkpoint ``path``.

    The configuration is the preset's with the format's method and settings, ``trainset=trained_on`` when given,
    and ``overrides``; the model it describes is built without pretrained weights (the file holds every weight)
    and must take the file's state dict key for key and shape for shape. ``out`` must be a new or empty folder.
    """
    if fmt not in PUBLISHED_FORMATS:
        raise FnacError(f"--format {fmt}: unknown (choose from {', '.join(PUBLISHED_FORMATS)})")
    path, out = Path(path), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FnacError(f"{out}: exists and is not an empty folder; import into a new one")
    form = PUBLISHED_FORMATS[fmt]
    settings = {**form.settings, **({"trainset": trained_on} if trained_on else {}), **(overrides or {})}
    cfg = preset(preset_name, method=form.method, **settings)
    state = read_published(path)
    model = build_model(cfg.replace(visual_pretrained=False, visual_weights=None, visual_pretrain=None),
                        progress=False)
    weights = workbench_keys(state["model"], model.state_dict(), where=str(path),
                             model=f"the {form.method} model of preset {preset_name!r}")
    model.load_state_dict(weights, strict=True)
    source = source_record(path, state, fmt, trained_on)
    epoch = state.get("epoch")
    imported = {"config": cfg.to_dict(), "model": model.state_dict(), "history": [], "source": source,
                "epoch": int(epoch) - 1 if isinstance(epoch, (int, np.integer)) else None}
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(imported, out / CHECKPOINT_FILE)
    atomic_write_text(out / SOURCE_FILE, json.dumps(source, indent=2) + "\n")
    return ImportedCheckpoint(out / CHECKPOINT_FILE, cfg, source)


def published_scores(checkpoint: str | os.PathLike, testset: str) -> dict[str, float] | None:
    """The published VGG-SS figures (as fractions, as ``scores.json`` holds scores) of an imported release, when
    ``testset`` is ``vggss`` and the checkpoint records them; else None."""
    if testset != "vggss":
        return None
    published = (read_checkpoint(checkpoint).get("source") or {}).get("published_vggss")
    return None if published is None else {k: v / 100 for k, v in published.items()}


def parity_line(scores: dict[str, Any], published: dict[str, float]) -> str:
    """One line comparing measured AP50 and AUC with the published ones, in percentage points, and whether both lie
    within :data:`fnac_lab.paper.PARITY_TOLERANCE`."""
    gaps = {k: 100 * (scores[k] - published[k]) for k in ("ap50", "auc")}
    verdict = ("parity" if all(abs(g) <= PARITY_TOLERANCE for g in gaps.values()) else "outside the tolerance")
    return (f"published VGG-SS AP50 {100 * published['ap50']:.2f}, AUC {100 * published['auc']:.2f}; measured "
            f"{100 * scores['ap50']:.2f} ({gaps['ap50']:+.2f}), {100 * scores['auc']:.2f} ({gaps['auc']:+.2f}): "
            f"{verdict} (tolerance {PARITY_TOLERANCE:g} points)")
