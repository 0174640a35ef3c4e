"""The extended protocol in the lab (SLAVC, Mo and Morgado, NeurIPS 2022): a model's localisations of the test
positives beside negatives in which nothing visible sounds, the confidence it gave each clip, and its scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import BUILTIN, TrainConfig
from ..datasets import NEGATIVES_SPLIT
from ..scoring import EXTENDED_REFERENCE_MAPS, EvalResult, evaluate_with_negatives
from ..metrics import EXTENDED_CONFIDENCE_THRESHOLD, EXTENDED_SCORES
from .runs import evaluation_split

#: How a clip of the extended test set is labelled in the tables and figures.
SETS = {"positive": "positive", "silent": "silent", "off_screen": "off screen"}


def negatives_split(cfg: TrainConfig, share: float | None = None, *, split: str = "test"):
    """The built-in negatives of ``cfg``'s test split, ``share`` of them per test clip (``None``: the configuration's
    own ``test_negatives``); None on real data, for another ``split`` than the test split, or when the share gives
    none."""
    if cfg.dataset != BUILTIN or split != "test":
        return None
    cfg = cfg if share is None else cfg.replace(test_negatives=share)
    if round(cfg.test_negatives * cfg.n_test) < 1:
        return None
    return evaluation_split(cfg, NEGATIVES_SPLIT)


def no_negatives_reason(cfg: TrainConfig, share: float, split: str = "test") -> str:
    """The line a notebook prints when :func:`negatives_split` gives no negatives, saying why."""
    if cfg.dataset != BUILTIN:
        return ("no negatives shown: the lab draws them beside the built-in test split only; a real set's negatives "
                "are scored with `fnac-lab evaluate --testset vggss_extended` (or flickr_extended)")
    return f"no negatives shown: they exist for the built-in test split, and test_negatives={share} gives none"


def localise_with_negatives(model, positives, negatives, *, batch_size: int = 64, device: torch.device | str = "cpu",
                            progress: bool = False) -> EvalResult:
    """Maps, cIoU and confidence of every positive, maps and confidence of every negative, and the extended scores
    (:func:`fnac_lab.scoring.evaluate_with_negatives`, maps kept)."""
    return evaluate_with_negatives(model, positives, negatives, batch_size=batch_size, device=device, keep_maps=True,
                                   progress=progress)


def extended_table(results: Mapping[str, EvalResult]) -> pd.DataFrame:
    """Rows: each model, then the centre prior and random maps (of the first model's evaluation: the same clips);
    columns: AP50 over the positives and the extended protocol's AP, max-F1 and precision."""
    columns = ("ap50", *EXTENDED_SCORES)
    rows = {name: {k: r.scores[k] for k in columns} for name, r in results.items()}
    first = next(iter(results.values()))
    for key, label in zip(EXTENDED_REFERENCE_MAPS, ("centre prior", "random map")):
        rows[label] = {k: first.reference_maps[key][k] for k in columns}
    table = pd.DataFrame(rows).T[list(columns)]
    table.columns = ["AP50 (positives)", "extended AP", "max-F1", f"precision at {EXTENDED_CONFIDENCE_THRESHOLD}"]
    return table


def confidence_table(results: Mapping[str, EvalResult], positives, negatives) -> pd.DataFrame:
    """One row per clip, positives first: ``id``, ``set`` (positive, silent, off screen), ``what`` (the sounding
    class, or what the negative holds), and per model ``confidence NAME`` and ``cIoU NAME`` (NaN on negatives)."""
    first = next(iter(results.values()))
    neg = first.negatives
    what = [positives.class_name(int(c)) for c in first.labels] + [negatives.describe(i) for i in range(len(neg["ids"]))]
    table = pd.DataFrame({"id": list(first.ids) + list(neg["ids"]),
                          "set": ["positive"] * len(first.ids) + [SETS[k] for k in neg["kinds"]], "what": what})
    for name, r in results.items():
        table[f"confidence {name}"] = np.concatenate([r.confidences["model"], r.negatives["confidence"]["model"]])
        table[f"cIoU {name}"] = np.concatenate([r.cious.numpy(), np.full(len(neg["ids"]), np.nan)])
    return table


@dataclass
class ExampleRows:
    """Rows of a frames-and-maps figure mixing positives and negatives (``boxes`` None on a negative)."""

    images: list[torch.Tensor]
    maps: dict[str, np.ndarray]
    boxes: list[Any]
    distractor_boxes: list[Any]
    cious: dict[str, np.ndarray]
    confidences: dict[str, np.ndarray]
    titles: list[str]

    def figure_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`fnac_lab.viz.localisation_grid` that draw these rows."""
        return {"images": self.images, "maps": self.maps, "boxes": self.boxes, "distractor_boxes": self.distractor_boxes,
                "cious": self.cious, "confidences": self.confidences, "row_titles": self.titles}


def extended_examples(results: Mapping[str, EvalResult], positives, negatives, *, positive_indices: Sequence[int],
                      negative_indices: Sequence[int]) -> ExampleRows:
    """The chosen positives, then the chosen negatives, with every model's map, cIoU (NaN on a negative) and
    confidence, titled by what the clip holds."""
    pos, neg = [int(i) for i in positive_indices], [int(i) for i in negative_indices]
    pb, nb = positives.batch(pos) if pos else None, negatives.batch(neg) if neg else None
    images = ([*pb["image"]] if pos else []) + ([*nb["image"]] if neg else [])
    boxes = ([*pb["box"]] if pos else []) + [None] * len(neg)
    distractors = ([*pb["distractor_boxes"]] if pos else []) + ([*nb["distractor_boxes"]] if neg else [])
    titles = [f"positive: {positives.class_name(int(pb['label'][j]))}" for j in range(len(pos))] + \
             [negatives.describe(i) for i in neg]
    maps, cious, confidences = {}, {}, {}
    for name, r in results.items():
        maps[name] = np.concatenate([r.maps[pos], r.negatives["maps"][neg]])
        cious[name] = np.concatenate([r.cious.numpy()[pos], np.full(len(neg), np.nan)])
        confidences[name] = np.concatenate([r.confidences["model"][pos], r.negatives["confidence"]["model"][neg]])
    return ExampleRows(images, maps, boxes, distractors, cious, confidences, titles)
