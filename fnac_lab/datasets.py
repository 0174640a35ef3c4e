"""The datasets a configuration names: the built-in data generated from its seed (with ``test_negatives``, the
extended protocol's negatives beside the test split), or a real benchmark's training set (or its cache) with the
annotated test set split into validation and test. The data package takes explicit arguments; this module reads them
off a :class:`~fnac_lab.config.TrainConfig`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from .config import BUILTIN, REAL, ConfigError, TrainConfig
from .data.annotations import read_labels
from .data.builtin import BuiltinSpec, builtin_splits
from .data.cache import CachedAVDataset
from .data.catalogue import EXTENDED_TESTSETS
from .data.contracts import ListsMissing
from .data.negatives import BuiltinNegatives, negatives_count
from .data.real import open_testset, open_trainset, validation_split
from .utils import FnacError, write_rows

#: The split of the extended protocol's negatives, scored together with the ``test`` split (built-in data).
NEGATIVES_SPLIT = "test_negatives"


def build_datasets(cfg: TrainConfig) -> dict[str, Any]:
    """Train / val / test datasets named by ``cfg.dataset`` (the built-in data is generated here). With
    ``cfg.test_negatives`` the built-in data adds :data:`NEGATIVES_SPLIT`: ``round(test_negatives * n_test)`` silent
    and off-screen clips of the test split's classes, from a random stream of their own (every other split stays
    bit-identical)."""
    if cfg.dataset == BUILTIN:
        spec = BuiltinSpec(n_classes=cfg.n_classes, image_size=cfg.image_size, n_scenes=cfg.n_scenes)
        out: dict[str, Any] = builtin_splits(n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test,
                                             seed=cfg.data_seed, spec=spec, n_unheard=cfg.n_unheard)
        n_negatives = negatives_count(cfg.test_negatives, cfg.n_test)
        if n_negatives:
            out[NEGATIVES_SPLIT] = BuiltinNegatives(n_negatives, seed=cfg.data_seed, spec=spec,
                                                    classes=out["test"].classes)
        return out
    if cfg.dataset == REAL:
        return real_splits(cfg)
    raise ConfigError(f"dataset={cfg.dataset!r} is not available")


def datasets_for_split(cfg: TrainConfig, split: str) -> dict[str, Any]:
    """The datasets of ``cfg`` that scoring ``split`` needs: :func:`build_datasets`, except that a real
    configuration's validation or test split is opened without its training set (:func:`real_evaluation_splits`),
    which a checkpoint evaluated away from its training data, or imported, does not have."""
    if cfg.dataset == REAL and split != "train":
        return real_evaluation_splits(cfg)
    return build_datasets(cfg)


def real_splits(cfg: TrainConfig) -> dict[str, torch.utils.data.Dataset]:
    """``train`` / ``val`` / ``test`` for ``dataset="real"``: the training set (from ``cache_dir`` when given),
    and the annotated test set split by :func:`real_evaluation_splits`."""
    _check_real_testset(cfg)
    if cfg.cache_dir is not None:
        train = CachedAVDataset(cfg.cache_dir, split="train", audio_augment=False)
        if train.meta["audio_rate"] != cfg.audio_rate:
            raise ConfigError(f"audio_rate={cfg.audio_rate}: the cache {cfg.cache_dir} holds audio_rate="
                              f"{train.meta['audio_rate']} (none = native rates)")
        if cfg.train_labels is not None:
            train.set_labels(read_labels(cfg.train_labels), source=cfg.train_labels)
    elif cfg.train_root is None:
        raise ConfigError("train_root: required for dataset='real' unless cache_dir is given")
    else:
        train = open_trainset(cfg.train_root, cfg.trainset, ids=cfg.train_ids, labels=cfg.train_labels,
                              audio_rate=cfg.audio_rate)
    if len(train) < cfg.batch_size:
        raise ConfigError(f"batch_size={cfg.batch_size}: exceeds the {len(train)} training clips found")
    return {"train": train, **real_evaluation_splits(cfg)}


def _check_real_testset(cfg: TrainConfig) -> None:
    """Refuse a real configuration without an annotated test set to select on and report."""
    if cfg.testset in EXTENDED_TESTSETS:
        raise ConfigError(f"testset={cfg.testset}: its negatives have no ground truth to select a model on; train with "
                          f"testset={EXTENDED_TESTSETS[cfg.testset][0]} and score with fnac-lab evaluate --testset "
                          f"{cfg.testset}")
    for name in ("test_root", "test_annotations"):
        if getattr(cfg, name) is None:
            raise ConfigError(f"{name}: required for dataset='real' (see docs/real-benchmarks.md)")


def real_evaluation_splits(cfg: TrainConfig) -> dict[str, torch.utils.data.Dataset]:
    """``val`` / ``test`` for ``dataset="real"``, without the training set: the annotated test set split into a
    seeded validation part (``val_fraction``, used for model selection) and the remaining test part (reported,
    never selected on), or the two lists ``val_split_csv`` and ``test_split_csv``."""
    _check_real_testset(cfg)
    parts = (own_validation_split(cfg) if cfg.val_split_csv is not None else
             split_for_validation(open_testset(cfg.testset, cfg.test_root, cfg.test_annotations,
                                               split_csv=cfg.test_split_csv, audio_rate=cfg.audio_rate), cfg))
    for name, part in parts.items():
        if len(part) == 0:
            raise FnacError(f"the {name} part of {cfg.testset} is empty ({len(part.missing)} of its ids are missing on "
                            "disk)")
    return parts


def split_for_validation(full, cfg: TrainConfig) -> dict[str, Any]:
    """``val`` / ``test``: the seeded ``val_fraction`` of the listed test ids, and the rest."""
    listed = full.ids + [i for i, _ in full.missing]
    val_ids = validation_split(listed, cfg.val_fraction, cfg.data_seed)
    parts = {}
    for name, keep in (("val", True), ("test", False)):
        indices = [k for k, i in enumerate(full.ids) if (i in val_ids) == keep]
        missing = [m for m in full.missing if (m[0] in val_ids) == keep]
        parts[name] = full.subset(indices, name=f"{cfg.testset} {name}", missing=missing)
    return parts


def own_validation_split(cfg: TrainConfig) -> dict[str, Any]:
    """``val`` from ``val_split_csv`` and ``test`` from ``test_split_csv``, both annotated in ``test_annotations``;
    refused when the two lists share an id (a validation clip would then be reported as test)."""
    parts = {name: open_testset(cfg.testset, cfg.test_root, cfg.test_annotations, split_csv=csv,
                                audio_rate=cfg.audio_rate)
             for name, csv in (("val", cfg.val_split_csv), ("test", cfg.test_split_csv))}
    listed = {name: set(part.ids) | {i for i, _ in part.missing} for name, part in parts.items()}
    shared = sorted(listed["val"] & listed["test"])
    if shared:
        raise ConfigError(f"val_split_csv={cfg.val_split_csv}: {len(shared)} of its ids are also test ids "
                          f"(first: {', '.join(shared[:3])}); validation and test must not overlap")
    return {name: part.subset(range(len(part)), name=f"{cfg.testset} {name}", missing=part.missing)
            for name, part in parts.items()}


def negatives_of(datasets: dict[str, Any], split: str) -> Any | None:
    """The negatives scored together with ``split``: those of the test split when the configuration has them."""
    return datasets.get(NEGATIVES_SPLIT) if split == "test" else None


#: The reports of :func:`write_dataset_reports` in a run's folder, as a glob pattern.
MISSING_REPORTS = "missing_*.csv"


def write_dataset_reports(datasets: dict[str, Any], out_dir: str | os.PathLike) -> None:
    """``missing_<split>.csv`` for every split with listed ids absent on disk (count printed to stderr); a split
    with none has no such file (an earlier one, from before its files were found, is removed)."""
    for name, ds in datasets.items():
        missing = ds.missing if isinstance(ds, ListsMissing) else None
        path = Path(out_dir) / MISSING_REPORTS.replace("*", name)
        if missing:
            write_rows(path, ["id", "reason"], missing)
            print(f"{name}: {len(missing)} listed ids are missing on disk (see {path})", file=sys.stderr)
        else:
            path.unlink(missing_ok=True)
