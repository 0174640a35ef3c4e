"""Evaluation: localisation maps of a trained model scored with the benchmark metrics, beside reference maps.

A score means little alone: a centred blob or the ground truth itself (the ceiling under the median
threshold) set the range. Every evaluation therefore scores, on the same samples:

- ``centre_prior``: a centred Gaussian (under the median threshold: the central disc of half the area);
- ``random``: uniform noise per pixel (seeded);
- ``oracle``: minus the distance to the ground-truth region, the best any map can do with the
  median threshold (it marks the region plus its nearest surroundings).

With negatives (clips in which nothing visible sounds) the extended protocol of SLAVC (Mo and Morgado, NeurIPS 2022)
adds ``extended_ap``, ``max_f1`` and ``precision`` (:func:`fnac_lab.metrics.extended_summary`) from every clip's
confidence (:func:`fnac_lab.metrics.map_confidence`); cIoU, AP50 and AUC stay scores of the positives alone. The
reference maps' confidences are taken as the protocol takes a map's: the mean of its top quarter, their values being
on [0, 1] already. The centre prior has one confidence for every clip (so no ranking: AP 0 under the published sum);
the random map's ranks the clips by chance. The oracle has no map on a negative (no ground truth to draw it from) and
is not scored on the extended protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import scipy.ndimage
import torch
from tqdm.auto import tqdm

from . import metrics
from .data.contracts import InMemoryData, collate_fn
from .losses import intra_modal_embeddings
from .metrics import MAP_SIZE
from .models import Localiser
from .ogl import fuse_maps
from .utils import normalise_images, write_json, write_rows


@dataclass
class EvalResult:
    """Per-sample cIoU and the summary scores of one evaluation."""

    ids: list[str]
    cious: torch.Tensor  # float64 [N]
    labels: list[Any]
    scores: dict[str, float]
    reference_maps: dict[str, dict[str, float]] = field(default_factory=dict)
    maps: np.ndarray | None = None  # [N, 224, 224] float32 when kept
    #: with ``embeddings=True``: per-sample ``audio`` embeddings, ``visual`` (spatial mean of the visual map) and
    #: ``foreground`` (the TNE-pooled visual features), each ``[N, D]`` float32
    embeddings: dict[str, np.ndarray] | None = None
    #: with ``embeddings=True``: the visual maps ``[M, D, H, W]`` of the first :data:`CROSS_SAMPLES` samples, for
    #: the same-class AUROC of the cross-modal logits (the similarities NCE contrasts)
    visual_maps: np.ndarray | None = None
    #: with ``confidences=True``: per-sample confidence of the model's maps and of the centre prior and random maps
    confidences: dict[str, np.ndarray] | None = None
    #: with ``confidences=True``: per-sample cIoU of the centre prior and random maps
    reference_cious: dict[str, np.ndarray] | None = None
    #: after :func:`with_negatives`: the negatives scored beside (:func:`score_negatives`)
    negatives: dict[str, Any] | None = None

    def fn_auroc(self, max_samples: int = 1000) -> dict[str, float]:
        """``fn_auroc_<matrix>``: :func:`fnac_lab.metrics.same_class_auroc` of each kept embedding over the first
        ``max_samples`` samples; empty without embeddings or without a class for every sample."""
        labels = self.labels[:max_samples]
        if self.embeddings is None or any(lab is None or lab == "" for lab in labels):
            return {}
        out = {}
        for name, x in self.embeddings.items():
            value = metrics.same_class_auroc(x[:max_samples], labels)
            if value is not None:
                out[f"fn_auroc_{name}"] = value
        if self.visual_maps is not None:
            n = min(len(labels), len(self.visual_maps))
            value = metrics.pair_scores_auroc(cross_pair_scores(self.visual_maps[:n], self.embeddings["audio"][:n]),
                                              labels[:n])
            if value is not None:
                out["fn_auroc_cross"] = value
        return out

    def write(self, out_dir: str | Path, extra_scores: dict[str, Any] | None = None) -> None:
        """``per_sample.csv`` (id, ciou, class), with negatives also a ``confidence`` column and ``negatives.csv``
        (id, kind, label, confidence), and last ``scores.json`` into ``out_dir``, each atomically: a folder with
        ``scores.json`` holds a complete set."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        columns = {"ciou": self.cious.tolist()}
        if self.negatives is not None:
            columns["confidence"] = self.confidences["model"].tolist()
        write_per_sample(out / "per_sample.csv", self.ids, self.labels, columns)
        if self.negatives is not None:
            neg = self.negatives
            write_rows(out / "negatives.csv", ["id", "kind", "label", "confidence"],
                       [[*row[:3], f"{row[3]:.6f}"] for row in zip(neg["ids"], neg["kinds"], neg["labels"],
                                                                    neg["confidence"]["model"].tolist())])
        write_json(out / "scores.json", {**self.scores, **(extra_scores or {}), "reference_maps": self.reference_maps})


def write_per_sample(path: Path, ids: Sequence[str], classes: Sequence[Any], columns: Mapping[str, Sequence[float]]
                     ) -> None:
    """``per_sample.csv`` of any evaluation: ``id``, the first score column, ``class`` (a name, or a built-in
    class's index), then the other score columns, six decimals each."""
    names = list(columns)
    rows = [[i, f"{columns[names[0]][k]:.6f}", cls, *(f"{columns[c][k]:.6f}" for c in names[1:])]
            for k, (i, cls) in enumerate(zip(ids, classes))]
    write_rows(path, ["id", names[0], "class", *names[1:]], rows)


#: Every file an evaluation (of a built-in split or a real test set) may write into its ``--out`` folder.
RESULT_FILES = ("scores.json", "per_sample.csv", "missing.csv", "skipped.csv", "maps.npz", "maps_ogl.npz",
                "negatives.csv", "maps_negatives.npz")


def remove_results(out: Path) -> None:
    """Remove an earlier evaluation's :data:`RESULT_FILES` from ``out``: a stale file of another checkpoint or set
    must never sit beside the files of the evaluation that follows."""
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)


#: Samples whose visual maps an evaluation with ``embeddings=True`` keeps (``fn_auroc_cross``).
CROSS_SAMPLES = 1000


def cross_pair_scores(visual_maps: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """``[N, N]`` symmetric pair scores from the cross-modal logits ``L[b, k] = max_{h,w} <img[b, :, h, w], aud[k]>``
    (the similarities NCE contrasts, before the temperature): ``(L + L^T) / 2``, computed in float64."""
    img = torch.from_numpy(np.asarray(visual_maps)).double()
    aud = torch.from_numpy(np.asarray(audio)).double()
    logits = torch.stack([torch.einsum("chw,kc->khw", m, aud).flatten(1).amax(dim=1) for m in img])
    return ((logits + logits.T) / 2).numpy()


def centre_prior(size: int = MAP_SIZE, sigma: float = 0.25) -> torch.Tensor:
    """A centred isotropic Gaussian map ``[size, size]`` (``sigma`` as a fraction of the side)."""
    r = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    return torch.exp(-(r[None, :] ** 2 + r[:, None] ** 2) / (2 * sigma**2))


def oracle_maps(gt: torch.Tensor) -> torch.Tensor:
    """Minus the Euclidean distance to the ground-truth region (``gt > 0``), per map of ``[N, H, W]``."""
    out = np.empty(gt.shape, dtype=np.float32)
    for i, g in enumerate(gt.cpu().numpy()):
        out[i] = -scipy.ndimage.distance_transform_edt(g <= 0)
    return torch.from_numpy(out)


def _batches(dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False) -> Iterator[dict]:
    """The batches of a built-in split in order, each with its samples' positions as ``index``."""
    n = len(dataset)
    if isinstance(dataset, InMemoryData):
        for start in range(0, n, batch_size):
            idx = list(range(start, min(start + batch_size, n)))
            yield {**dataset.batch(idx), "index": idx}
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         pin_memory=pin_memory, collate_fn=collate_fn(dataset))
    start = 0
    for batch in loader:
        size = len(batch["id"])
        yield {**batch, "index": list(range(start, start + size))}
        start += size


def ground_truth(dataset, indices: list[int], batch: dict, device: torch.device) -> torch.Tensor:
    """Ground-truth maps ``[B, 224, 224]`` on ``device``, from the first source the batch or dataset offers.

    ``batch["gt"]`` (dense maps); ``batch["gt_boxes"]`` (integer pixel boxes ``[B, K, 4]``, all-zero rows as
    padding) drawn on the device with the dataset's ``gt_mode`` (``"vggss"`` unless it says ``"flickr"``);
    else ``dataset.gt_maps(indices)``.
    """
    if "gt" in batch:
        return batch["gt"].to(device, non_blocking=True)
    if "gt_boxes" in batch:
        boxes = batch["gt_boxes"].to(device, non_blocking=True)
        return metrics.gt_maps_from_boxes(boxes, MAP_SIZE, mode=getattr(dataset, "gt_mode", "vggss"))
    return dataset.gt_maps(indices).to(device, non_blocking=True)


def _invalid_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per sample (on the device, no sync): a non-finite map value."""
    return ~torch.isfinite(maps).flatten(1).all(dim=1)


def _keep_embeddings(img: torch.Tensor, aud: torch.Tensor, tau: float, tne_threshold: float | None,
                     embedded: dict[str, list[torch.Tensor]], visual_maps: list[torch.Tensor], n_maps: int) -> int:
    """Append a batch's intra-modal embeddings (and its visual maps, up to :data:`CROSS_SAMPLES` in all) to the
    lists; returns how many visual maps are kept now."""
    for name, x in intra_modal_embeddings(img.float(), aud.float(), tau, tne_threshold).items():
        embedded[name].append(x.cpu())
    if n_maps < CROSS_SAMPLES:
        visual_maps.append(img[: CROSS_SAMPLES - n_maps].float().cpu())
        n_maps += len(visual_maps[-1])
    return n_maps


#: The reference maps scored beside the model's (module docstring), and those scored on the extended protocol (the
#: oracle has no map on a negative).
TRIVIAL = ("centre_prior", "random", "oracle")
EXTENDED_REFERENCE_MAPS = ("centre_prior", "random")


def _score_maps(maps: torch.Tensor, gt: torch.Tensor, segmentation: bool) -> dict[str, torch.Tensor]:
    """Per-sample cIoU (``maps`` checked for finite values by the caller) and, for masks, IoU and F-score."""
    out = {"ciou": metrics.ciou(maps, gt, check_finite=False)}
    if segmentation:
        out["iou"] = metrics.mask_iou(maps, gt)
        out["f_score"] = metrics.f_score(maps, gt)
    return out


def _score_reference_maps(gt: torch.Tensor | None, prior: torch.Tensor, noise: torch.Tensor, segmentation: bool,
                   confidences: bool, out: dict[str, dict[str, list[torch.Tensor]]]) -> None:
    """A batch's scores of the centre prior, the random map ``noise`` and (with ground truth) the oracle, and with
    ``confidences`` the first two's confidences, appended to ``out``."""
    reference = {"centre_prior": prior.expand(noise.shape[0], -1, -1), "random": noise}
    if gt is not None:
        reference["oracle"] = oracle_maps(gt).to(gt.device)
    for name, m in reference.items():
        if gt is not None:
            for k, v in _score_maps(m, gt, segmentation).items():
                out[name].setdefault(k, []).append(v.cpu())
        if confidences and name in EXTENDED_REFERENCE_MAPS:
            out[name].setdefault("confidence", []).append(metrics.map_confidence(m).cpu())


@dataclass
class ScoredSamples:
    """What :func:`score_batches` gathers, per sample in the order the batches came."""

    order: list[int]  # each sample's position in its set (the batches' ``index``)
    ids: list[str]
    labels: list[Any]
    kinds: list[str]
    #: of the model's maps: ``ciou`` [+ ``iou``, ``f_score``] (with ground truth), the same with ``_ogl`` (with an
    #: object network), ``confidence`` (with ``confidences``); CPU tensors ``[N]``
    columns: dict[str, torch.Tensor]
    #: the same columns of each reference map (no ``_ogl``; ``confidence`` only of :data:`EXTENDED_REFERENCE_MAPS`)
    reference_maps: dict[str, dict[str, torch.Tensor]]
    maps: np.ndarray | None = None
    ogl_maps: np.ndarray | None = None
    embeddings: dict[str, np.ndarray] | None = None
    visual_maps: np.ndarray | None = None

    def set_order(self) -> np.ndarray:
        """The permutation that puts the samples back in their set's order (a stable argsort of ``order``)."""
        return np.argsort(np.array(self.order), kind="stable")

    def set_positions(self) -> np.ndarray:
        """The samples' positions in their set, in the set's order (``order`` sorted, as :meth:`set_order` puts it)."""
        return np.sort(np.array(self.order))


@torch.no_grad()
def score_batches(model: Localiser, batches: Iterable[dict], *, total: int, device: torch.device,
                  generator: torch.Generator, ground_truth: Callable[[dict], torch.Tensor] | None = None,
                  segmentation: bool = False, reference_maps: bool = True, confidences: bool = False,
                  keep_maps: bool = False, object_network: torch.nn.Module | None = None, embeddings: bool = False,
                  tne_threshold: float | None = 0.6, desc: str = "evaluate", progress: bool = True) -> ScoredSamples:
    """The scoring loop of every evaluation: localise each batch (``image``, ``spec``, ``id``, ``index``, optionally
    ``label`` and ``kind``) and score its maps on the device.

    ``ground_truth(batch)`` gives the batch's ground-truth maps on ``device``; without it (negatives) only
    confidences are kept. Beside the model's maps: the reference maps (``reference_maps``; the random map drawn from
    ``generator``, one ``[B, 224, 224]`` draw per batch), the OGL fused maps (``object_network``), each map's
    confidence (``confidences``: :func:`fnac_lab.metrics.map_confidence`), the maps themselves (``keep_maps``) and
    the intra-modal embeddings (``embeddings``, the foreground ones pooled with ``tne_threshold``). The model's
    columns stay on the device until the end, where the host waits once (the oracle's distance transform runs in
    scipy); non-finite maps raise a :class:`ValueError` naming their samples. No score depends on what else is kept.
    """
    was_training = model.training
    model.eval()
    prior = centre_prior().to(device)
    confidences = confidences or ground_truth is None
    columns: dict[str, list[torch.Tensor]] = {}
    base: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in TRIVIAL}
    order, ids, labels, kinds, invalid, kept, kept_ogl, visual_maps = [], [], [], [], [], [], [], []
    embedded: dict[str, list[torch.Tensor]] = {"audio": [], "visual": [], "foreground": []}
    n_maps = 0
    for batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
        image = normalise_images(batch["image"].to(device, non_blocking=True))
        img, aud = model(image, batch["spec"].to(device, non_blocking=True).float())
        maps = model.maps_from_embeddings(img, aud)
        invalid.append(_invalid_maps(maps))
        b = maps.shape[0]
        if embeddings:
            n_maps = _keep_embeddings(img, aud, model.tau, tne_threshold, embedded, visual_maps, n_maps)
        scored = {"": maps}
        if object_network is not None:
            scored["_ogl"] = fuse_maps(maps, object_network(image))
        gt = ground_truth(batch) if ground_truth is not None else None
        for suffix, m in scored.items():
            for k, v in (_score_maps(m, gt, segmentation) if gt is not None else {}).items():
                columns.setdefault(k + suffix, []).append(v)
        if confidences:
            columns.setdefault("confidence", []).append(metrics.map_confidence(maps, tau=model.tau))
        if reference_maps:
            noise = torch.rand(b, MAP_SIZE, MAP_SIZE, generator=generator).to(device)
            _score_reference_maps(gt, prior, noise, segmentation, confidences, base)
        if keep_maps:
            kept.append(maps.float().cpu().numpy())
            if object_network is not None:
                kept_ogl.append(scored["_ogl"].cpu().numpy())
        order.extend(int(i) for i in batch["index"])
        ids.extend(batch["id"])
        lab = batch.get("label")
        labels.extend(lab.tolist() if isinstance(lab, torch.Tensor) else (lab or [""] * b))
        kinds.extend(batch.get("kind") or [""] * b)
    model.train(was_training)
    bad = torch.cat(invalid).nonzero().flatten().tolist() if invalid else []  # the one wait for the device
    if bad:
        raise ValueError(f"non-finite localisation maps for {len(bad)} samples "
                         f"(first ids: {', '.join(ids[i] for i in bad[:5])})")
    return ScoredSamples(
        order=order, ids=ids, labels=labels, kinds=kinds,
        columns={k: torch.cat(v).cpu() for k, v in columns.items()},
        reference_maps={name: {k: torch.cat(v) for k, v in cols.items()} for name, cols in base.items() if cols},
        maps=np.concatenate(kept) if kept else None, ogl_maps=np.concatenate(kept_ogl) if kept_ogl else None,
        embeddings={k: torch.cat(v).numpy() for k, v in embedded.items()} if embeddings and ids else None,
        visual_maps=torch.cat(visual_maps).numpy() if embeddings and ids else None)


def evaluate_model(
    model: Localiser,
    dataset,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    keep_maps: bool = False,
    reference_maps: bool = True,
    progress: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    desc: str = "evaluate",
    embeddings: bool = False,
    tne_threshold: float | None = 0.6,
    confidences: bool = False,
) -> EvalResult:
    """Localise every sample of ``dataset`` and score it (:func:`score_batches`).

    ``dataset`` yields batches with ``image`` (uint8 or float in [0, 1]), ``spec`` and ``id``; the
    ground-truth maps ``[B, 224, 224]`` come from :func:`ground_truth`. ``reference_maps`` scores the reference maps
    beside (the random map seeded by ``seed``). ``embeddings`` keeps each sample's intra-modal embeddings (the
    foreground ones pooled with ``tne_threshold``) from the same forward pass. ``confidences`` keeps each sample's
    confidence (:func:`fnac_lab.metrics.map_confidence`) and the reference maps' confidences and cIoUs, for the
    extended protocol (:func:`with_negatives`); no score changes with it.
    """
    device = torch.device(device)
    scored = score_batches(
        model, _batches(dataset, batch_size, num_workers, pin_memory=device.type == "cuda"),
        total=-(-len(dataset) // batch_size), device=device, generator=torch.Generator().manual_seed(seed),
        ground_truth=lambda batch: ground_truth(dataset, batch["index"], batch, device), reference_maps=reference_maps,
        confidences=confidences, keep_maps=keep_maps, embeddings=embeddings, tne_threshold=tne_threshold, desc=desc,
        progress=progress)
    if not scored.ids:
        raise ValueError("the evaluation set is empty")
    cious = scored.columns["ciou"]
    result = EvalResult(ids=scored.ids, cious=cious, labels=scored.labels,
                        scores={**metrics.summarise(cious), "n_samples": len(scored.ids)},
                        maps=scored.maps, embeddings=scored.embeddings, visual_maps=scored.visual_maps)
    if reference_maps:
        result.reference_maps = {name: metrics.summarise(cols["ciou"]) for name, cols in scored.reference_maps.items()}
    if confidences:
        reference = scored.reference_maps
        result.confidences = {"model": scored.columns["confidence"].numpy(),
                              **{k: v["confidence"].numpy() for k, v in reference.items() if "confidence" in v}}
        result.reference_cious = {k: reference[k]["ciou"].numpy() for k in EXTENDED_REFERENCE_MAPS if k in reference}
    return result


def negatives_generator(seed: int) -> torch.Generator:
    """The random map's stream on the negatives: its own, apart from the positives' (which stay as they were)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 5]).generate_state(1)[0]))


def negatives_confidences(scored: ScoredSamples) -> dict[str, np.ndarray]:
    """Per clip of :func:`score_batches` without ground truth: the confidence of the model's map, of the centre prior
    (one value for all) and of the random map."""
    return {"model": scored.columns["confidence"].numpy(),
            **{k: scored.reference_maps[k]["confidence"].numpy() for k in EXTENDED_REFERENCE_MAPS}}


def score_negatives(model: Localiser, dataset, *, batch_size: int = 64, device: torch.device | str = "cpu",
                    seed: int = 0, keep_maps: bool = False, progress: bool = True, num_workers: int = 0,
                    desc: str = "negatives") -> dict[str, Any]:
    """Confidences of clips without a visible sounding object: ``{"ids", "kinds", "labels", "confidence", "maps"}``.

    ``confidence`` holds, per clip, that of the model's map (:func:`fnac_lab.metrics.map_confidence` on the absolute
    scale) and those of the centre prior (one value for all) and of a uniform random map (drawn from
    :func:`negatives_generator`); ``maps`` the model's maps ``[N, 224, 224]`` with ``keep_maps``, else None.
    """
    device = torch.device(device)
    scored = score_batches(model, _batches(dataset, batch_size, num_workers, pin_memory=device.type == "cuda"),
                           total=-(-len(dataset) // batch_size), device=device, generator=negatives_generator(seed),
                           keep_maps=keep_maps, desc=desc, progress=progress)
    if not scored.ids:
        raise ValueError("the set of negatives is empty")
    return {"ids": scored.ids, "kinds": [k or "negative" for k in scored.kinds], "labels": scored.labels,
            "confidence": negatives_confidences(scored), "maps": scored.maps}


def extended_scores(confidence: np.ndarray, cious: np.ndarray, negative_confidence: np.ndarray) -> dict[str, Any]:
    """:func:`fnac_lab.metrics.extended_summary` of positives (their confidences and cIoUs) and negatives."""
    n_pos, n_neg = len(confidence), len(negative_confidence)
    return metrics.extended_summary(np.concatenate([confidence, negative_confidence]),
                                    np.concatenate([np.asarray(cious, dtype=np.float64), np.full(n_neg, np.nan)]),
                                    np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)]))


def with_negatives(result: EvalResult, negatives: dict[str, Any]) -> EvalResult:
    """``result`` (of :func:`evaluate_model` with ``confidences=True``) with the extended protocol's scores added to
    its ``scores`` and, for the centre prior and random maps, to its ``reference_maps``; the negatives kept beside."""
    if result.confidences is None:
        raise ValueError("the evaluation of the positives kept no confidences (evaluate_model(confidences=True))")
    result.scores.update(extended_scores(result.confidences["model"], result.cious.numpy(),
                                         negatives["confidence"]["model"]))
    for name in EXTENDED_REFERENCE_MAPS:
        if name in result.reference_maps and name in result.reference_cious:
            result.reference_maps[name].update(extended_scores(result.confidences[name], result.reference_cious[name],
                                                          negatives["confidence"][name]))
    result.negatives = negatives
    return result


def evaluate_with_negatives(model: Localiser, dataset, negatives, *, batch_size: int = 64,
                            device: torch.device | str = "cpu", seed: int = 0, keep_maps: bool = False,
                            progress: bool = True, desc: str = "evaluate", **kwargs: Any) -> EvalResult:
    """:func:`evaluate_model` of the positives ``dataset`` (its scores unchanged) and :func:`score_negatives` of
    ``negatives``, joined by :func:`with_negatives`."""
    result = evaluate_model(model, dataset, batch_size=batch_size, device=device, seed=seed, keep_maps=keep_maps,
                            progress=progress, desc=desc, confidences=True, **kwargs)
    scored = score_negatives(model, negatives, batch_size=batch_size, device=device, seed=seed, keep_maps=keep_maps,
                             progress=progress, desc=f"{desc} negatives")
    return with_negatives(result, scored)
