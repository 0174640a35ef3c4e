"""Sound-source localisation metrics with the benchmark's published conventions.

Per sample (224 x 224 map ``p`` against a ground-truth weight map ``g``):

    p    <- (p - min p) / (max p - min p)            unless p is constant
    thr  =  sort(p)[floor(H * W / 2)]                 (ascending sort)
    pred =  1[p >= thr]                               (ties at the threshold included)
    cIoU =  sum(pred * g) / (sum(g) + sum(pred * 1[g == 0]))

Over a test set: AP50 = share of samples with cIoU >= 0.5 (the "cIoU" column of the literature's
tables), mean cIoU, and AUC = trapezoid area under the success rate share(cIoU >= t) for
t = 0.05 * i, i = 0..20. Everything is vectorised over the batch and runs on whichever device the
maps live on.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from .utils import normalise_maps

#: Side of the square maps the benchmarks score (predictions are upsampled to it, boxes drawn at it).
MAP_SIZE = 224
#: Success-rate thresholds, computed as ``0.05 * i`` in float64 exactly as the published evaluator does.
AUC_THRESHOLDS = tuple(0.05 * i for i in range(21))


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 2:
        return x.unsqueeze(0), True
    if x.dim() == 3:
        return x, False
    raise ValueError(f"expected a map [H, W] or a batch [N, H, W], got shape {tuple(x.shape)}")


def median_threshold(maps: torch.Tensor) -> torch.Tensor:
    """Per-map threshold: the element at index ``floor(H*W/2)`` of the ascending sort, shape ``[N]``."""
    flat = maps.flatten(1)
    k = flat.shape[1] // 2
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        # numpy's introselect finds the same element about 2.5x faster than torch's CPU kthvalue
        return torch.from_numpy(np.partition(flat.detach().numpy(), k, axis=1)[:, k])
    return flat.kthvalue(k + 1, dim=1).values


def binarise(maps: torch.Tensor) -> torch.Tensor:
    """Predicted regions ``[N, H, W]`` (bool): normalised map >= its median threshold, ties included."""
    norm = normalise_maps(maps)
    return norm >= median_threshold(norm).view(-1, 1, 1)


def ciou(pred: torch.Tensor, gt: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
    """Consensus IoU per sample.

    ``pred``: raw localisation maps ``[N, H, W]`` or one ``[H, W]`` (any real dtype, any device);
    ``gt``: ground-truth weight maps of the same shape (binary for VGG-SS, 0 / 0.5 / 1 for Flickr).
    Returns a float64 tensor ``[N]`` (a 0-dim tensor for a single map). ``check_finite=False`` skips the
    NaN / inf check, which waits for the device: for callers that check once at the end of a loop.
    """
    pred, single = _as_batch(pred)
    gt, _ = _as_batch(gt)
    if pred.dtype in (torch.float16, torch.bfloat16):
        pred = pred.float()  # the published evaluator works in float32; ties depend on it
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} does not match ground truth {tuple(gt.shape)}")
    if check_finite and not torch.isfinite(pred).all():
        bad = (~torch.isfinite(pred.flatten(1))).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"localisation maps contain NaN or inf (samples {bad[:10]})")
    region = binarise(pred).flatten(1)
    g = gt.to(device=region.device, dtype=torch.float64).flatten(1)
    inter = torch.where(region, g, 0.0).sum(dim=1)
    outside = (region & (g == 0)).sum(dim=1)  # an exact count
    out = inter / (g.sum(dim=1) + outside)
    return out[0] if single else out


def success_curve(cious: torch.Tensor | Sequence[float]) -> np.ndarray:
    """Share of samples with cIoU >= t for each t in :data:`AUC_THRESHOLDS`."""
    values = torch.as_tensor(cious, dtype=torch.float64).flatten().cpu().numpy()
    return np.array([(values >= t).sum() / len(values) for t in AUC_THRESHOLDS])


def summarise(cious: torch.Tensor | Sequence[float]) -> dict[str, float]:
    """``{"ap50", "mean_ciou", "auc"}`` over a set of per-sample cIoUs (floats)."""
    values = torch.as_tensor(cious, dtype=torch.float64).flatten().cpu().numpy()
    if len(values) == 0:
        raise ValueError("cannot summarise an empty set of cIoU values")
    curve = success_curve(values)
    return {
        "ap50": float((values >= 0.5).sum() / len(values)),
        "mean_ciou": float(values.mean()),
        "auc": float(np.trapezoid(curve, AUC_THRESHOLDS)),
    }


def gt_map(boxes: Iterable[Sequence[int]], size: int = 224, mode: str = "vggss") -> torch.Tensor:
    """Ground-truth map ``[size, size]`` (float64) from integer pixel boxes ``(xmin, ymin, xmax, ymax)``.

    A box fills rows ``ymin:ymax`` and columns ``xmin:xmax`` (end-exclusive), clipped to the image: a box
    partly outside keeps its inside part (coordinates are clipped to ``[0, size]`` first, so a negative one
    never wraps around as Python slicing would). ``mode="vggss"`` gives the binary union of the boxes;
    ``mode="flickr"`` the annotator consensus ``sum(boxes) / 2`` clipped at 1 (one box alone gives 0.5).
    """
    if mode not in ("vggss", "flickr"):
        raise ValueError(f"mode must be 'vggss' or 'flickr', got {mode!r}")
    acc = torch.zeros(size, size, dtype=torch.float64)
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box is (xmin, ymin, xmax, ymax), got {box!r}")
        x0, y0, x1, y1 = clip_box(box, size)
        acc[y0:y1, x0:x1] += 1
    if mode == "vggss":
        return (acc > 0).to(torch.float64)
    return (acc / 2).clamp(max=1)


def clip_box(box: Sequence[int], size: int = 224) -> tuple[int, int, int, int]:
    """An integer pixel box ``(xmin, ymin, xmax, ymax)`` with each coordinate clipped to ``[0, size]``: the part
    inside the image (empty when the box lies wholly outside or is inverted)."""
    return tuple(min(max(int(v), 0), size) for v in box)  # type: ignore[return-value]


def box_is_empty(box: Sequence[int], size: int = 224) -> bool:
    """Whether ``box`` covers no pixel of the image once clipped (:func:`clip_box`)."""
    x0, y0, x1, y1 = clip_box(box, size)
    return x1 <= x0 or y1 <= y0


def gt_maps_from_boxes(boxes: torch.Tensor, size: int = 224, mode: str = "vggss") -> torch.Tensor:
    """:func:`gt_map` for a batch, drawn on the boxes' device: ``[N, size, size]`` float64.

    ``boxes``: integer pixel boxes ``[N, K, 4]`` (``xmin, ymin, xmax, ymax``, end-exclusive), clipped to the
    image as in :func:`gt_map`; rows with ``xmax <= xmin`` or ``ymax <= ymin`` (all-zero padding) draw nothing.
    """
    if mode not in ("vggss", "flickr"):
        raise ValueError(f"mode must be 'vggss' or 'flickr', got {mode!r}")
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N, K, 4], got shape {tuple(boxes.shape)}")
    boxes = boxes.clamp(0, size)
    pos = torch.arange(size, device=boxes.device)
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))  # [N, K, 1] each
    rows = ((pos >= y0) & (pos < y1)).float()  # [N, K, size]
    cols = ((pos >= x0) & (pos < x1)).float()
    # boxes covering each pixel, [N, size, size]: a sum of K products of 0/1, exact in float32
    count = rows.transpose(1, 2) @ cols
    if mode == "vggss":
        return (count > 0).to(torch.float64)
    return (count.to(torch.float64) / 2).clamp(max=1)


def vggss_box_to_pixels(box: Sequence[float], size: int = 224) -> tuple[int, int, int, int]:
    """A normalised VGG-SS box ``[x0, y0, x1, y1]`` in pixels: ``int(clip(v, 0, 1) * size)``."""
    return tuple(int(min(max(float(v), 0.0), 1.0) * size) for v in box)  # type: ignore[return-value]


def flickr_box_to_pixels(box: Sequence[float], size: int = 224) -> tuple[int, int, int, int]:
    """A Flickr-SoundNet box in 256-pixel coordinates scaled as ``int(size * v / 256)``."""
    return tuple(int(size * float(v) / 256) for v in box)  # type: ignore[return-value]


def vggss_boxes_to_pixels(boxes: torch.Tensor, size: int = 224) -> torch.Tensor:
    """:func:`vggss_box_to_pixels` for a tensor of normalised boxes ``[..., 4]`` on any device (int64).

    Computed in float64, as Python computes ``int(clip(v, 0, 1) * size)``, so that boxes on a pixel
    boundary round the same way.
    """
    return (boxes.to(torch.float64).clamp(0, 1) * size).floor().to(torch.int64)


# -- AVSBench single-source (S4) segmentation scores --------------------------------------------------------------
#
# The map is thresholded exactly as for cIoU (min-max normalisation, median threshold, ties included) and the
# predicted region R is compared with the binary mask M of the frame:
#
#     IoU = |R & M| / |R | M|                       (an empty M scores the complements: |~R & ~M| / (H * W))
#     P   = |R & M| / |R|,   Rc = |R & M| / |M|
#     F   = (1 + beta2) * P * Rc / (beta2 * P + Rc)  with beta2 = 0.3 (0 where the denominator is 0)
#
# mIoU and the F-score of a test set are the means over its frames.

AVSBENCH_BETA2 = 0.3


def _regions_and_masks(pred: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    pred, single = _as_batch(pred)
    mask, _ = _as_batch(mask)
    if pred.shape != mask.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} does not match mask {tuple(mask.shape)}")
    if pred.dtype in (torch.float16, torch.bfloat16):
        pred = pred.float()
    region = binarise(pred).flatten(1).to(torch.float64)
    return region, (mask.to(device=region.device).flatten(1) > 0).to(torch.float64), single


def mask_iou(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-frame IoU of the thresholded raw maps ``pred`` ``[N, H, W]`` against binary masks (float64 ``[N]``)."""
    region, m, single = _regions_and_masks(pred, mask)
    inter = (region * m).sum(dim=1)
    union = torch.maximum(region, m).sum(dim=1)
    empty = m.sum(dim=1) == 0
    inter = torch.where(empty, ((1 - region) * (1 - m)).sum(dim=1), inter)
    union = torch.where(empty, torch.full_like(union, m.shape[1]), union)
    out = inter / union
    return out[0] if single else out


def f_score(pred: torch.Tensor, mask: torch.Tensor, beta2: float = AVSBENCH_BETA2) -> torch.Tensor:
    """Per-frame F-score (``beta2`` = beta squared) of the thresholded raw maps against binary masks."""
    region, m, single = _regions_and_masks(pred, mask)
    tp = (region * m).sum(dim=1)

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))

    precision, recall = ratio(tp, region.sum(dim=1)), ratio(tp, m.sum(dim=1))
    out = ratio((1 + beta2) * precision * recall, beta2 * precision + recall)
    return out[0] if single else out


def summarise_segmentation(ious: torch.Tensor | Sequence[float], fscores: torch.Tensor | Sequence[float]) -> dict[str, float]:
    """``{"miou", "f_score"}``: the means of per-frame IoU and F-score."""
    ious = torch.as_tensor(ious, dtype=torch.float64).flatten()
    fscores = torch.as_tensor(fscores, dtype=torch.float64).flatten()
    if ious.numel() == 0 or ious.numel() != fscores.numel():
        raise ValueError(f"need as many IoUs as F-scores, and at least one (got {ious.numel()}, {fscores.numel()})")
    return {"miou": float(ious.mean()), "f_score": float(fscores.mean())}


# -- false-negative detection ----------------------------------------------------------------------------------------


def same_class_auroc(embeddings: torch.Tensor | np.ndarray, labels: Sequence) -> float | None:
    """AUROC with which the cosine similarity of two embeddings separates same-class from different-class pairs.

    Every unordered pair ``i < j`` of the rows of ``embeddings`` ``[N, D]`` is scored by its cosine similarity
    and labelled same-class or not (``labels``: one class id or name per row); the result is scikit-learn's
    ``roc_auc_score`` of those scores: the probability that a random same-class pair scores above a random
    different-class pair (ties count half). 0.5 is chance, 1.0 a perfect ranking. It measures how much
    false-negative information an intra-modal similarity carries: FNAC's targets ``softmax(aud aud^T / tau)`` and
    ``softmax(v v^T / tau)`` help only where same-class pairs score higher. ``None`` when the pairs are all of
    one kind.
    """
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    if x.dim() != 2 or x.shape[0] != len(labels):
        raise ValueError(f"expected embeddings [N, D] with one label per row, got {tuple(x.shape)} and {len(labels)}")
    x = torch.nn.functional.normalize(x, dim=1)
    return pair_scores_auroc((x @ x.T).numpy(), labels)


def pair_scores_auroc(scores: np.ndarray, labels: Sequence) -> float | None:
    """:func:`same_class_auroc` of a symmetric pair-score matrix ``[N, N]`` (its pairs ``i < j``)."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores)
    if scores.shape != (len(labels), len(labels)):
        raise ValueError(f"expected scores [N, N] with one label per row, got {scores.shape} and {len(labels)}")
    pairs = np.triu_indices(len(labels), k=1)
    lab = np.asarray(labels)
    same = (lab[:, None] == lab[None, :])[pairs]
    if same.all() or not same.any():
        return None
    return float(roc_auc_score(same, scores[pairs]))


# -- the extended protocol: localising nothing when nothing sounds ---------------------------------------------------
#
# Mo and Morgado, "A Closer Look at Weakly-Supervised Audio-Visual Source Localization" (SLAVC, NeurIPS 2022), extend
# Flickr-SoundNet and VGG-SS with negatives: clips in which no visible object sounds (silence, or a source off screen).
# A model must then say, per clip, how sure it is that something visible sounds. With the published evaluator:
#
#     s    = (S * tau + 1) / 2 = (cos + 1) / 2        the map on its absolute scale, [0, 1] (S = cos / tau)
#     c    = mean of the ceil(H * W / 4) largest s     the clip's confidence (the top quarter of the map)
#
# At a confidence threshold t a clip is *detected* when c >= t; a detected positive whose cIoU (relative prediction:
# the min-max normalised map at its median, as for cIoU everywhere) reaches 0.5 is a true positive, any other
# detected clip a false positive, an undetected positive a false negative (an undetected negative counts nowhere):
#
#     P(t) = TP / (TP + FP)   (1 when nothing is detected)        R(t) = TP / (TP + FN)   (1 when TP + FN = 0)
#
# AP:      thresholds t_0 > t_1 > ... : the confidences sorted in descending order without the largest, every k-th
#          (k = max(1, floor(N / 200))), AP = sum_j max_{i >= j} P(t_i) * (R(t_{j+1}) - R(t_j));
# max-F1:  the largest F1 = 2 P R / (P + R) over thresholds at every k-th confidence in ascending order
#          (k = max(1, floor(N / 10)));
# precision: P at the published confidence threshold 0.5.
#
# ``published=False`` takes every distinct confidence as a threshold and AP as sum_n (R_n - R_{n-1}) P_n from R = 0,
# without interpolation: with every positive localised (cIoU >= 0.5) that is scikit-learn's average_precision_score.

#: Confidence threshold of the published evaluator (its ``default_conf_thr``).
EXTENDED_CONFIDENCE_THRESHOLD = 0.5
#: The scores :func:`extended_summary` gives.
EXTENDED_SCORES = ("extended_ap", "max_f1", "precision")
#: Per-clip confidences: the published mean of the map's top quarter, or the map's maximum.
CONFIDENCE_REDUCTIONS = ("top_quarter", "max")


def map_confidence(maps: torch.Tensor, *, tau: float | None = None, reduce: str = "top_quarter") -> torch.Tensor:
    """Per-map confidence ``[N]`` (float64) that a visible object sounds, on the absolute scale of the extended
    protocol (SLAVC, Mo and Morgado, NeurIPS 2022).

    ``maps`` ``[N, H, W]`` are similarity maps ``S = cos / tau`` when ``tau`` is given, mapped to
    ``s = (S * tau + 1) / 2`` in [0, 1]; with ``tau=None`` they are taken as already on that scale (the reference
    maps). ``reduce="top_quarter"`` (default, the published evaluator) is the mean of the ``ceil(H * W / 4)``
    largest ``s``; ``"max"`` the largest ``s`` alone. The scale is absolute, never relative to the map or the set:
    a min-max normalised map has maximum 1 whatever it shows, and AP and max-F1 rank the clips, so only the fixed
    threshold of :func:`extended_summary`'s precision would see a rescaling of the set.
    """
    if reduce not in CONFIDENCE_REDUCTIONS:
        raise ValueError(f"reduce must be one of {CONFIDENCE_REDUCTIONS}, got {reduce!r}")
    flat, _ = _as_batch(maps)
    flat = flat.flatten(1).to(torch.float64)
    if tau is not None:
        flat = (flat * tau + 1) / 2
    if reduce == "max":
        return flat.amax(dim=1)
    k = -(-flat.shape[1] // 4)
    return flat.topk(k, dim=1).values.mean(dim=1)


def _extended_inputs(confidence, ciou, positive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    conf = np.asarray(torch.as_tensor(confidence, dtype=torch.float64).cpu(), dtype=np.float64).ravel()
    pos = np.asarray(positive, dtype=bool).ravel()
    iou = np.asarray(torch.as_tensor(ciou, dtype=torch.float64).cpu(), dtype=np.float64).ravel()
    if not len(conf) == len(pos) == len(iou):
        raise ValueError(f"need one confidence, cIoU and positive flag per clip (got {len(conf)}, {len(iou)}, {len(pos)})")
    if len(conf) == 0 or not np.isfinite(conf).all():
        raise ValueError("confidences must be finite and at least one")
    if not np.isfinite(iou[pos]).all():
        raise ValueError("every positive clip needs a finite cIoU")
    return conf, iou, pos


def detection_counts(confidence, ciou, positive, thresholds, *, iou_threshold: float = 0.5
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(TP, FP, FN)`` at each confidence threshold (arrays like ``thresholds``): detected = ``confidence >= t``;
    TP a detected positive with ``ciou >= iou_threshold``, FP any other detected clip, FN an undetected positive.
    ``ciou`` of the negatives is ignored (NaN is fine)."""
    conf, iou, pos = _extended_inputs(confidence, ciou, positive)
    t = np.asarray(thresholds, dtype=np.float64)
    hit = pos & (iou >= iou_threshold)

    def at_or_above(values: np.ndarray) -> np.ndarray:
        return len(values) - np.searchsorted(np.sort(values), t, side="left")

    detected, tp, pos_detected = at_or_above(conf), at_or_above(conf[hit]), at_or_above(conf[pos])
    return tp, detected - tp, pos.sum() - pos_detected


def precision_recall(confidence, ciou, positive, thresholds, *, iou_threshold: float = 0.5
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each threshold from :func:`detection_counts`, with the published conventions:
    precision 1 when nothing is detected, recall 1 when there is no true positive or false negative to count."""
    tp, fp, fn = detection_counts(confidence, ciou, positive, thresholds, iou_threshold=iou_threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp == 0, 1.0, tp / np.maximum(tp + fp, 1))
        recall = np.where(tp + fn == 0, 1.0, tp / np.maximum(tp + fn, 1))
    return precision, recall


def extended_ap(confidence, ciou, positive, *, iou_threshold: float = 0.5, published: bool = True) -> float:
    """AP over positives and negatives (SLAVC's ``AP-all@50``); see the equations above this function.

    ``published`` (default): thresholds at the confidences in descending order without the largest, every
    ``max(1, N // 200)``-th, and ``AP = sum_j max_{i >= j} P_i (R_{j+1} - R_j)``, as the published evaluator sums it.
    ``published=False``: every distinct confidence, ``AP = sum_n (R_n - R_{n-1}) P_n`` from ``R = 0``.
    """
    conf, iou, pos = _extended_inputs(confidence, ciou, positive)
    if published:
        thresholds = np.sort(conf)[:-1][:: -max(1, len(conf) // 200)]
        if len(thresholds) < 2:
            return 0.0
        p, r = precision_recall(conf, iou, pos, thresholds, iou_threshold=iou_threshold)
        p_max = np.maximum.accumulate(p[::-1])[::-1]
        return float(np.sum(p_max[:-1] * np.diff(r)))
    p, r = precision_recall(conf, iou, pos, np.unique(conf)[::-1], iou_threshold=iou_threshold)
    return float(np.sum(np.diff(np.concatenate([[0.0], r])) * p))


def max_f1(confidence, ciou, positive, *, iou_threshold: float = 0.5, published: bool = True) -> float:
    """The largest F1 ``2 P R / (P + R)`` (0 where ``P + R = 0``) over confidence thresholds: with ``published``,
    every ``max(1, N // 10)``-th confidence in ascending order (the published evaluator's eleven or so), else
    every distinct confidence."""
    conf, iou, pos = _extended_inputs(confidence, ciou, positive)
    thresholds = np.sort(conf)[:: max(1, len(conf) // 10)] if published else np.unique(conf)
    p, r = precision_recall(conf, iou, pos, thresholds, iou_threshold=iou_threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
    return float(f1.max())


def extended_summary(confidence, ciou, positive, *, iou_threshold: float = 0.5,
                     confidence_threshold: float = EXTENDED_CONFIDENCE_THRESHOLD, published: bool = True
                     ) -> dict[str, float | int]:
    """``extended_ap``, ``max_f1`` and ``precision`` (at ``confidence_threshold``) of one evaluated set, with
    ``n_positives`` and ``n_negatives``. ``confidence`` from :func:`map_confidence`, ``ciou`` per clip (negatives:
    ignored), ``positive`` True for the clips with a visible sounding object."""
    conf, iou, pos = _extended_inputs(confidence, ciou, positive)
    p, _ = precision_recall(conf, iou, pos, [confidence_threshold], iou_threshold=iou_threshold)
    return {"extended_ap": extended_ap(conf, iou, pos, iou_threshold=iou_threshold, published=published),
            "max_f1": max_f1(conf, iou, pos, iou_threshold=iou_threshold, published=published),
            "precision": float(p[0]), "n_positives": int(pos.sum()), "n_negatives": int((~pos).sum())}
