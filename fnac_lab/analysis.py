"""Computations behind the notebooks: a batch's adjacency matrices, same-class pairs and how well
intra-modal similarity finds them, embeddings, best and worst localisations, false-negative statistics
and the report of a training run against its NCE-only twin.

The adjacency matrices are the ones the FNAC terms compare (REFERENCE section 2), built with the
functions of :mod:`fnac_lab.losses`; with ``img`` ``[B, C, h, w]`` and ``aud`` ``[B, C]`` normalised:

    audio       A_aud[b, k] = <aud[b], aud[k]> / tau
    visual      A_img[b, k] = <v[b], v[k]> / tau            v = spatial mean of img (not re-normalised)
    cross       logits[b, k] = max_hw S[b, k, h, w]         image b against audio k
    foreground  A_fg[b, k] = <f[b], f[k]> / tau             f = foreground-pooled img (TNE mask)

so that ``fns_audio = D(softmax(audio), softmax(cross))``, ``fns_visual = D(softmax(visual),
softmax(cross))`` and ``tne = D(softmax(audio), softmax(foreground))``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .config import BUILTIN, TrainConfig, preset
from .data.sampling import false_negative_ratio  # noqa: F401  (re-exported for the notebooks)
from .evaluate import EvalResult, evaluate_model
from .losses import foreground_features, max_pooled_logits, minmax_normalise, own_maps, similarity_maps
from .metrics import vggss_box_to_pixels
from .models import AVLocalizer
from .utils import FnacError, atomic_write_text, normalise_images, write_json

MATRICES = ("audio", "visual", "cross", "foreground")
INTRA_MODAL = ("audio", "visual", "foreground")
SCORES = ("ap50", "mean_ciou", "auc")
#: The weights that make a configuration its NCE-only twin (the EZ-VSL baseline).
NCE_ONLY = {"w_fns_audio": 0.0, "w_fns_visual": 0.0, "w_tne": 0.0}
#: The paper's false-negative ratios under random sampling of VGG-Sound (REFERENCE section 6).
PAPER_FN_RATIO = {128: 0.3927, 256: 0.6117}
#: REFERENCE section 6's companions: uniform over 309 classes, and VGG-SS's own class mix.
REFERENCE_FN_RATIO = {"uniform 309 classes": {128: 0.34, 256: 0.56}, "VGG-SS class mix": {128: 0.46, 256: 0.70}}


# -- adjacency matrices --------------------------------------------------------------------------------------------


@dataclass
class BatchAdjacency:
    """The four ``[B, B]`` adjacency matrices of one batch (logit scale, i.e. divided by tau), with the
    own-pair maps ``S[b, b]`` ``[B, h, w]`` and the TNE foreground mask ``[B, h, w]`` they came from."""

    audio: torch.Tensor
    visual: torch.Tensor
    cross: torch.Tensor
    foreground: torch.Tensor
    own: torch.Tensor
    mask: torch.Tensor

    def matrices(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in MATRICES}

    def softmax(self) -> dict[str, torch.Tensor]:
        """Row-wise softmax of each matrix: the distributions the FNAC distances compare."""
        return {name: m.softmax(dim=1) for name, m in self.matrices().items()}


def tne_mask(own: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """The TNE foreground mask: ``1[M > threshold]`` with ``M`` the min-max normalised own-pair map (``M`` itself
    when ``threshold`` is None), the mask :func:`fnac_lab.losses.foreground_features` pools with."""
    norm = minmax_normalise(own)
    return norm if threshold is None else (norm > threshold).to(own.dtype)


def batch_adjacency(img: torch.Tensor, aud: torch.Tensor, *, tau: float, tne_threshold: float | None = 0.6) -> BatchAdjacency:
    """Adjacency matrices of a batch of normalised embeddings ``img`` ``[B, C, h, w]`` and ``aud`` ``[B, C]``."""
    sim = similarity_maps(img, aud, tau)
    own = own_maps(sim)
    v = img.mean(dim=(2, 3))
    f = foreground_features(img, own, tne_threshold)
    return BatchAdjacency(audio=aud @ aud.t() / tau, visual=v @ v.t() / tau, cross=max_pooled_logits(sim),
                          foreground=f @ f.t() / tau, own=own, mask=tne_mask(own, tne_threshold))


def descend_logits(start: torch.Tensor, objective, *, steps: int = 300, lr: float = 0.1) -> torch.Tensor:
    """Minimise ``objective(logits)`` over free logits with Adam from ``start``: what an objective does to the
    cross-modal matrix when every entry may move independently (a network cannot, but it shows the target)."""
    logits = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        objective(logits).backward()
        optimizer.step()
    return logits.detach()


@torch.no_grad()
def embed_batch(model: AVLocalizer, batch: Mapping[str, Any], *, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The model's normalised visual maps and audio embeddings of a batch (eval mode, float32, on the CPU)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    img, aud = model(normalise_images(batch["image"].to(device)), batch["spec"].to(device).float())
    model.train(was_training)
    return img.float().cpu(), aud.float().cpu()


def idealised_embeddings(batch: Mapping[str, Any], *, n_classes: int, grid: int = 7, dim: int = 16, noise: float = 0.1,
                         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings a perfectly trained model would give, drawn from a batch's annotations (float64, normalised).

    Every class ``c`` gets a random unit code ``u_c`` and the background one more code ``u_bg``. A clip embeds
    as ``u_label + noise``; a frame as a ``grid x grid`` map whose cell holds the code of the object covering
    the cell centre (the sounding object where it overlaps a distractor), ``u_bg`` elsewhere, plus noise.
    Boxes are the batch's normalised ``box`` and ``distractor_boxes`` (labels ``distractor_labels``, -1 = none).
    """
    gen = torch.Generator().manual_seed(seed)
    codes = torch.nn.functional.normalize(torch.randn(n_classes + 1, dim, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.as_tensor(batch["label"]).long()
    b = len(labels)
    centres = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    owner = torch.full((b, grid, grid), n_classes, dtype=torch.long)

    def paint(box, cls: int, i: int) -> None:
        x0, y0, x1, y1 = (float(v) for v in box)
        inside = ((centres[:, None] >= y0) & (centres[:, None] < y1) & (centres[None, :] >= x0) & (centres[None, :] < x1))
        owner[i][inside] = cls

    for i in range(b):
        for box, cls in zip(batch["distractor_boxes"][i], batch["distractor_labels"][i]):
            if int(cls) >= 0:
                paint(box, int(cls), i)
        paint(batch["box"][i], int(labels[i]), i)
    img = codes[owner].permute(0, 3, 1, 2) + noise * torch.randn(b, dim, grid, grid, generator=gen, dtype=torch.float64)
    aud = codes[labels] + noise * torch.randn(b, dim, generator=gen, dtype=torch.float64)
    return torch.nn.functional.normalize(img, dim=1), torch.nn.functional.normalize(aud, dim=1)


def same_class_mask(labels, *, include_self: bool = False) -> torch.Tensor:
    """``[B, B]`` bool: ``labels[i] == labels[j]`` (and ``i != j`` unless ``include_self``): the false negatives
    of contrastive learning, which treats every off-diagonal pair as a negative."""
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    mask = torch.from_numpy(lab[:, None] == lab[None, :])
    if not include_self:
        mask &= ~torch.eye(len(lab), dtype=torch.bool)
    return mask


# -- how well intra-modal similarity finds the same-class pairs -------------------------------------------------------


def pair_scores(similarity: torch.Tensor | np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """Scores and same-class truth of the unordered pairs ``i < j`` of a symmetric ``[B, B]`` similarity."""
    sim = np.asarray(similarity, dtype=np.float64)
    lab = np.asarray(labels)
    i, j = np.triu_indices(len(lab), k=1)
    return sim[i, j], lab[i] == lab[j]


@dataclass
class PairRetrieval:
    """Precision and recall of "pair is same-class" predicted by thresholding a similarity.

    ``precision[t]`` / ``recall[t]``: over pairs scoring at least ``thresholds[t]`` (scikit-learn's curve);
    ``average_precision``: the area under it; ``r_precision``: precision among the ``R`` best-scored pairs,
    ``R`` the number of same-class pairs (there precision equals recall); ``base_rate``: the share of
    same-class pairs, the precision of a random score.
    """

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    average_precision: float
    r_precision: float
    base_rate: float
    n_pairs: int
    n_same: int

    def summary(self) -> dict[str, float]:
        return {"average_precision": self.average_precision, "r_precision": self.r_precision,
                "base_rate": self.base_rate, "n_pairs": self.n_pairs, "n_same": self.n_same}


def pair_precision_recall(scores: np.ndarray, is_same: np.ndarray) -> PairRetrieval:
    """:class:`PairRetrieval` of pair ``scores`` against the same-class truth ``is_same``."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    scores = np.asarray(scores, dtype=np.float64)
    is_same = np.asarray(is_same, dtype=bool)
    n_same = int(is_same.sum())
    if n_same == 0:
        raise ValueError("no same-class pair among the scored pairs: precision and recall are undefined")
    precision, recall, thresholds = precision_recall_curve(is_same, scores)
    top = np.argsort(-scores, kind="stable")[:n_same]
    return PairRetrieval(precision=precision, recall=recall, thresholds=thresholds,
                         average_precision=float(average_precision_score(is_same, scores)),
                         r_precision=float(is_same[top].mean()), base_rate=float(is_same.mean()),
                         n_pairs=len(scores), n_same=n_same)


def same_class_softmax_mass(similarity: torch.Tensor, labels) -> float:
    """Mean, over members with a same-class partner, of the row-softmax mass on those partners: how much of
    an FNS target distribution (``softmax(A)`` row) points at false negatives rather than at the member itself
    or at true negatives."""
    prob = torch.as_tensor(similarity, dtype=torch.float64).softmax(dim=1)
    mask = same_class_mask(labels)
    has_partner = mask.any(dim=1)
    if not has_partner.any():
        raise ValueError("no member of the batch has a same-class partner")
    return float((prob * mask).sum(dim=1)[has_partner].mean())


def _dataset_batches(dataset, batch_size: int, max_batches: int | None) -> Iterator[tuple[list[int], dict]]:
    n_batches = len(dataset) // batch_size
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    for b in range(n_batches):
        idx = list(range(b * batch_size, (b + 1) * batch_size))
        yield idx, dataset.batch(idx) if hasattr(dataset, "batch") else _collate(dataset, idx)


def _collate(dataset, idx: list[int]) -> dict:
    items = [dataset[i] for i in idx]
    collate = getattr(dataset, "collate", None) or torch.utils.data.default_collate
    return collate(items)


def intramodal_retrieval(model: AVLocalizer, dataset, *, batch_size: int, tau: float, tne_threshold: float | None = 0.6,
                         device: torch.device | str = "cpu", max_batches: int | None = None
                         ) -> tuple[pd.DataFrame, dict[str, PairRetrieval]]:
    """How well each intra-modal similarity finds the same-class pairs of training-sized batches.

    The split is cut into consecutive batches of ``batch_size`` (pairs only within a batch, as in training).
    Returns a table indexed by matrix (``audio``, ``visual``, ``foreground``) with average precision,
    R-precision, the base rate and the softmax mass on same-class partners, and the curves.
    """
    scores: dict[str, list[np.ndarray]] = {name: [] for name in INTRA_MODAL}
    truth: list[np.ndarray] = []
    mass: dict[str, list[float]] = {name: [] for name in INTRA_MODAL}
    for _, batch in _dataset_batches(dataset, batch_size, max_batches):
        img, aud = embed_batch(model, batch, device=device)
        adj = batch_adjacency(img, aud, tau=tau, tne_threshold=tne_threshold)
        labels = batch["label"].numpy()
        for name in INTRA_MODAL:
            s, same = pair_scores(getattr(adj, name), labels)
            scores[name].append(s)
            if same_class_mask(labels).any():
                mass[name].append(same_class_softmax_mass(getattr(adj, name), labels))
        truth.append(same)
    if not truth:
        raise ValueError(f"the split has fewer than batch_size={batch_size} samples")
    is_same = np.concatenate(truth)
    curves = {name: pair_precision_recall(np.concatenate(scores[name]), is_same) for name in INTRA_MODAL}
    table = pd.DataFrame({name: {**curves[name].summary(), "same_class_mass": float(np.mean(mass[name]))}
                          for name in INTRA_MODAL}).T
    return table, curves


# -- embeddings -----------------------------------------------------------------------------------------------------


@torch.no_grad()
def collect_embeddings(model: AVLocalizer, dataset, *, batch_size: int = 64, tne_threshold: float | None = 0.6,
                       device: torch.device | str = "cpu", max_samples: int | None = None) -> dict[str, np.ndarray]:
    """Per-sample embeddings of a split: ``audio`` (the audio embedding), ``visual`` (spatial mean ``v`` of the
    visual map), ``foreground`` (the TNE-pooled ``f``), with ``labels`` and ``ids``."""
    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    out: dict[str, list] = {"audio": [], "visual": [], "foreground": [], "labels": [], "ids": []}
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        batch = dataset.batch(idx) if hasattr(dataset, "batch") else _collate(dataset, idx)
        img, aud = embed_batch(model, batch, device=device)
        own = own_maps(similarity_maps(img, aud, 1.0))  # the mask is min-max normalised: tau cancels
        out["audio"].append(aud.numpy())
        out["visual"].append(img.mean(dim=(2, 3)).numpy())
        out["foreground"].append(foreground_features(img, own, tne_threshold).numpy())
        out["labels"].append(np.asarray(batch["label"]))
        out["ids"].extend(batch["id"])
    return {k: (np.concatenate(v) if k != "ids" else v) for k, v in out.items()}


def umap_projection(x: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine",
                    seed: int = 0) -> np.ndarray:
    """2-D UMAP of the rows of ``x`` (umap-learn; reproducible from ``seed``)."""
    import umap

    n_neighbors = min(n_neighbors, len(x) - 1)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric=metric, random_state=seed, n_jobs=1)
    return reducer.fit_transform(np.asarray(x, dtype=np.float32))


def nearest_neighbour_accuracy(x: np.ndarray, labels) -> float:
    """Leave-one-out share of rows whose most cosine-similar other row has the same label."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    lab = np.asarray(labels)
    return float((lab[sim.argmax(axis=1)] == lab).mean())


# -- localisation maps ---------------------------------------------------------------------------------------------


def evaluation_split(cfg: TrainConfig, split: str = "test"):
    """One evaluation split of ``cfg``'s data. The built-in splits are generated from per-split seeds, so the
    training split is cut to one batch here (generating it in full would take minutes and change nothing)."""
    from .train import build_datasets

    if cfg.dataset == BUILTIN:
        cfg = cfg.replace(n_train=cfg.batch_size, **({} if split == "val" else {"n_val": 1}))
    datasets = build_datasets(cfg)
    if split not in datasets:
        raise FnacError(f"split {split!r} does not exist for this configuration (available: {', '.join(datasets)})")
    return datasets[split]


@dataclass
class ModelPair:
    """The FNAC model and its NCE baseline (either may be missing), the configuration of the data they are
    evaluated on, and a sentence saying where they came from."""

    models: dict[str, AVLocalizer]
    cfg: TrainConfig
    source: str


#: Folders of a ``01_train`` output directory: the configured run and its NCE-only twin.
RUN_FOLDERS = {"FNAC": "fnac", "NCE baseline": "nce"}


def load_model_pair(*, checkpoint: str | Path | None = None, baseline_checkpoint: str | Path | None = None,
                    run_dir: str | Path | None = None, preset_name: str = "demo", smoke: bool = False,
                    out_dir: str | Path | None = None, progress: bool = True) -> ModelPair:
    """The models a notebook looks at, by the first rule that applies:

    1. ``checkpoint`` and / or ``baseline_checkpoint``: those checkpoint files;
    2. ``run_dir``: the ``best.pt`` of a ``01_train`` output directory (``fnac/`` and ``nce/``);
    3. ``smoke``: fresh, untrained models of the ``smoke`` preset;
    4. otherwise: train ``preset_name`` and its NCE twin into ``out_dir`` (continuing what is there).
    """
    from .train import build_model, load_checkpoint, train

    paths: dict[str, Path] = {}
    if checkpoint is not None or baseline_checkpoint is not None:
        paths = {name: Path(p) for name, p in (("FNAC", checkpoint), ("NCE baseline", baseline_checkpoint)) if p is not None}
        source = "checkpoints " + ", ".join(str(p) for p in paths.values())
    elif run_dir is not None:
        paths = {name: Path(run_dir) / folder / "checkpoints" / "best.pt" for name, folder in RUN_FOLDERS.items()
                 if (Path(run_dir) / folder / "checkpoints" / "best.pt").is_file()}
        if not paths:
            raise FnacError(f"{run_dir}: no fnac/checkpoints/best.pt or nce/checkpoints/best.pt (a 01_train out_dir?)")
        source = f"the best checkpoints of the run in {run_dir}"
    if paths:
        models, cfgs = {}, {}
        for name, path in paths.items():
            models[name], cfgs[name], _ = load_checkpoint(path)
        return ModelPair(models=models, cfg=cfgs.get("FNAC", next(iter(cfgs.values()))), source=source)
    if smoke:
        cfg = preset("smoke")
        models = {}
        for i, name in enumerate(RUN_FOLDERS):
            torch.manual_seed(cfg.seed + i)
            models[name] = build_model(cfg).eval()
        return ModelPair(models=models, cfg=cfg, source="fresh, untrained models of the smoke preset (no checkpoint given)")
    if out_dir is None:
        raise FnacError("no checkpoint, run_dir or out_dir given: nothing to load and nowhere to train")
    cfg = preset(preset_name)
    models = {}
    for name, run_cfg in (("FNAC", cfg), ("NCE baseline", nce_twin(cfg))):
        models[name] = train(run_cfg, Path(out_dir) / RUN_FOLDERS[name], progress=progress).model.eval()
    return ModelPair(models=models, cfg=cfg, source=f"the {preset_name!r} preset and its NCE twin, trained into {out_dir}")


def localise(model: AVLocalizer, dataset, *, batch_size: int = 64, device: torch.device | str = "cpu",
             progress: bool = False) -> EvalResult:
    """Maps ``[N, 224, 224]`` and per-sample cIoU of a split (the benchmark evaluation, maps kept)."""
    return evaluate_model(model, dataset, batch_size=batch_size, device=device, keep_maps=True, baselines=False,
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


# -- false-negative statistics --------------------------------------------------------------------------------------


def expected_fn_ratio(class_probs: Sequence[float], batch_size: int) -> float:
    """Expected false-negative ratio of a batch of ``batch_size`` independent draws from ``class_probs``:
    ``sum_k p_k * (1 - (1 - p_k) ** (B - 1))`` (a member of class k has a partner among the B - 1 others)."""
    p = np.asarray(class_probs, dtype=np.float64)
    p = p / p.sum()
    return float((p * (1.0 - (1.0 - p) ** (batch_size - 1))).sum())


def fn_ratio_table(batch_sizes: Sequence[int], class_counts: Sequence[int]) -> pd.DataFrame:
    """Expected FN ratio for uniform classes: one row per (``n_classes``, ``batch_size``)."""
    rows = [{"n_classes": k, "batch_size": b, "fn_ratio": expected_fn_ratio(np.ones(k), b)}
            for k in class_counts for b in batch_sizes]
    return pd.DataFrame(rows)


# -- notebook runs: configuration, report, "what this run shows" ----------------------------------------------------


def notebook_config(preset_name: str, *, smoke: bool, values: Mapping[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """The configuration of a notebook run: the ``smoke`` preset when ``smoke`` else ``preset_name``, with every
    ``TrainConfig`` field found in ``values`` (a notebook's parameters) that is not None applied on top.

    ``values["fnac_strength"]``, when given, sets all three FNAC weights to that many times the batch size: the
    terms average over ``B x B`` entries, so their pull against NCE goes with ``w / B`` (the paper's 100 / 128 =
    0.78). Returns the configuration and the applied overrides."""
    name = "smoke" if smoke else preset_name
    overrides = {k: values[k] for k in TrainConfig.field_names() if values.get(k) is not None}
    cfg = preset(name, **overrides)
    strength = values.get("fnac_strength")
    if strength is not None:
        named = [k for k in NCE_ONLY if k in overrides]
        if named:
            raise FnacError(f"fnac_strength and {', '.join(named)} both set the FNAC weights; set one of them")
        weights = {k: float(strength) * cfg.batch_size for k in NCE_ONLY}
        cfg = cfg.replace(**weights)
        overrides = {**overrides, **weights}
    return cfg, overrides


def nce_twin(cfg: TrainConfig) -> TrainConfig:
    """The same configuration trained with NCE alone (the three FNAC weights set to 0)."""
    return cfg.replace(**NCE_ONLY)


def seed_list(cfg: TrainConfig, n_seeds: int) -> list[int]:
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be at least 1, got {n_seeds}")
    return [cfg.seed + i for i in range(n_seeds)]


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_metrics(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """Final scores of a finished training run (from ``summary.json`` and ``metrics.jsonl``): the test
    ``ap50``, ``mean_ciou``, ``auc``, ``n_samples`` of the best validation epoch, plus the run's facts."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    history = read_history(run_dir)
    test = summary[split]
    ratios = [r["fn_ratio"] for r in history if r.get("fn_ratio") is not None]
    return {
        **{k: test[k] for k in (*SCORES, "n_samples")},
        **{k: v for k, v in history[-1].items() if k.startswith("fn_auroc_")},  # at the last epoch
        "best_epoch": summary["best_epoch"],
        "epochs_trained": summary["epochs_trained"],
        "val": summary["val"],
        "fn_ratio": float(np.mean(ratios)) if ratios else None,
        "train_seconds": round(sum(r.get("train_seconds", 0.0) for r in history), 1),
        "val_ap50_by_epoch": [r["ap50"] for r in history],
        "trivial": test["baselines"],
    }


def ap50_noise(fnac: Mapping[str, Any], nce: Mapping[str, Any], *, tail: int = 3) -> dict[str, float]:
    """Noise of the AP50 difference of two single-seed runs, from two sources (the larger is used):

    - ``test_se``: binomial standard error of the difference, ``sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n)``;
    - ``epoch_jitter``: ``sqrt(s1^2 + s2^2)``, ``s`` the standard deviation (ddof 1) of a run's validation
      AP50 over its last ``tail`` epochs, a stand-in for how much a rerun with another seed moves.
    """
    n = fnac["n_samples"]
    test_se = math.sqrt(sum(r["ap50"] * (1 - r["ap50"]) / n for r in (fnac, nce)))
    tails = [r["val_ap50_by_epoch"][-tail:] for r in (fnac, nce)]
    jitter = math.sqrt(sum(float(np.std(t, ddof=1)) ** 2 for t in tails)) if all(len(t) >= 2 for t in tails) else 0.0
    return {"test_se": test_se, "epoch_jitter": jitter, "noise": max(test_se, jitter)}


def compare_to_baseline(fnac_runs: Sequence[Mapping[str, Any]], nce_runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """FNAC's gain over its NCE twin (paired by seed) and whether it exceeds the noise.

    With several seeds the noise is the standard error of the mean per-seed gain (standard deviation of the
    gains, ddof 1, over sqrt(n)); with one seed it is :func:`ap50_noise`. The gain counts as shown when it
    exceeds twice the noise.
    """
    if len(fnac_runs) != len(nce_runs) or not fnac_runs:
        raise ValueError("need one NCE run per FNAC run")
    gains = {k: [f[k] - b[k] for f, b in zip(fnac_runs, nce_runs)] for k in SCORES}
    out: dict[str, Any] = {"n_seeds": len(fnac_runs), **{k: float(np.mean(v)) for k, v in gains.items()},
                           "ap50_per_seed": gains["ap50"]}
    if len(fnac_runs) > 1:
        out["noise"] = float(np.std(gains["ap50"], ddof=1) / math.sqrt(len(fnac_runs)))
        out["noise_source"] = f"the standard error of the mean AP50 gain over {len(fnac_runs)} seeds"
    else:
        parts = ap50_noise(fnac_runs[0], nce_runs[0])
        out["noise"] = parts["noise"]
        out["noise_source"] = ("the binomial standard error of the AP50 difference on the test split"
                               if parts["test_se"] >= parts["epoch_jitter"] else
                               "the epoch-to-epoch spread of validation AP50 over the last epochs, one seed")
        out.update({k: parts[k] for k in ("test_se", "epoch_jitter")})
    out["exceeds_noise"] = bool(out["ap50"] > 2 * out["noise"])
    return out


def run_report(cfg: TrainConfig, fnac_runs: Sequence[Mapping[str, Any]], nce_runs: Sequence[Mapping[str, Any]] | None
               ) -> dict[str, Any]:
    """The content of ``metrics.json``: the first seed's final scores at top level, the NCE twin under
    ``baseline``, the trivial-map levels under ``trivial``, the comparison under ``gain``, all seeds under
    ``seeds``, and the configuration."""
    first = dict(fnac_runs[0])
    report: dict[str, Any] = {k: v for k, v in first.items() if k != "trivial"}
    report["fnac_active"] = cfg.fnac_active
    report["trivial"] = first["trivial"]
    if nce_runs:
        report["baseline"] = {k: v for k, v in nce_runs[0].items() if k != "trivial"}
        report["gain"] = compare_to_baseline(fnac_runs, nce_runs)
    report["seeds"] = [{"seed": cfg.seed + i, **{k: r[k] for k in SCORES},
                        **({"baseline": {k: nce_runs[i][k] for k in SCORES}} if nce_runs else {})}
                       for i, r in enumerate(fnac_runs)]
    report["config"] = cfg.to_dict()
    return report


def scores_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """AP50 / mean cIoU / AUC of the run, its NCE twin and the trivial maps (rows), from a :func:`run_report`.
    With several seeds the run rows are seed means."""
    def mean_over_seeds(key: str | None) -> dict[str, float]:
        runs = [s[key] if key else s for s in report["seeds"]]
        return {k: float(np.mean([r[k] for r in runs])) for k in SCORES}

    rows = {"FNAC" if report["fnac_active"] else "configured run (NCE only)": mean_over_seeds(None)}
    if "baseline" in report:
        rows["NCE baseline"] = mean_over_seeds("baseline")
    names = {"centre_prior": "centre prior", "random": "random map", "oracle": "oracle (gt-derived)"}
    for key, label in names.items():
        rows[label] = {k: report["trivial"][key][k] for k in SCORES}
    table = pd.DataFrame(rows).T[list(SCORES)]
    table.columns = ["AP50", "mean cIoU", "AUC"]
    return table


def write_report(out_dir: str | Path, report: Mapping[str, Any]) -> pd.DataFrame:
    """Write ``metrics.json`` and ``scores.md`` (the :func:`scores_table` as markdown) into ``out_dir``."""
    out = Path(out_dir)
    write_json(out / "metrics.json", report)
    table = scores_table(report)
    n = report["n_samples"]
    seeds = len(report["seeds"])
    note = f"Test split, {n} samples" + (f", mean over {seeds} seeds" if seeds > 1 else "") + "."
    atomic_write_text(out / "scores.md", table.to_markdown(floatfmt=".3f") + f"\n\n{note}\n")
    return table


def _against_centre_prior(report: Mapping[str, Any]) -> str:
    """Which models beat the centre prior on which score, in one sentence."""
    names = {"ap50": "AP50", "mean_ciou": "mean cIoU", "auc": "AUC"}
    centre = report["trivial"]["centre_prior"]
    runs = {"FNAC" if report["fnac_active"] else "the configured run": report}
    if "baseline" in report:
        runs["the NCE baseline"] = report["baseline"]
    level = ", ".join(f"{names[k]} {centre[k]:.3f}" for k in SCORES)
    parts = []
    for name, run in runs.items():
        above = [names[k] for k in SCORES if run[k] > centre[k]]
        below = [names[k] for k in SCORES if run[k] <= centre[k]]
        if not below:
            parts.append(f"{name} beats it on every score")
        elif not above:
            parts.append(f"{name} beats it on none (its maps carry no more localisation than a centred blob)")
        else:
            parts.append(f"{name} beats it on {' and '.join(above)} but not on {' and '.join(below)}")
    return f"Against the centre prior ({level}): " + "; ".join(parts) + "."


def what_this_run_shows(report: Mapping[str, Any]) -> list[str]:
    """Plain statements computed from a :func:`run_report` (markdown bullet texts)."""
    cfg = report["config"]
    trivial = report["trivial"]
    lines = []
    name = "FNAC" if report["fnac_active"] else "The configured run (NCE only)"
    lines.append(f"{name} reached test AP50 **{report['ap50']:.3f}** (mean cIoU {report['mean_ciou']:.3f}, "
                 f"AUC {report['auc']:.3f}) on {report['n_samples']} test samples, with the checkpoint of validation "
                 f"epoch {report['best_epoch']} of {report['epochs_trained']}.")
    if "baseline" in report:
        base, gain = report["baseline"], report["gain"]
        verdict = ("exceeds twice the noise estimate: on this run FNAC beats the NCE baseline beyond noise"
                   if gain["exceeds_noise"] else
                   "does not exceed twice the noise estimate: this run does not show a difference between FNAC "
                   "and the NCE baseline beyond noise")
        seeds = f" (mean over {gain['n_seeds']} seeds)" if gain["n_seeds"] > 1 else ""
        lines.append(f"The NCE-only twin reached AP50 **{base['ap50']:.3f}**; FNAC's AP50 gain{seeds} is "
                     f"**{gain['ap50']:+.3f}** against a noise estimate of {gain['noise']:.3f} from {gain['noise_source']}; "
                     f"the gain {verdict}.")
    lines.append(_against_centre_prior(report))
    lines.append(f"Random maps score AP50 {trivial['random']['ap50']:.3f} and the gt-derived oracle "
                 f"{trivial['oracle']['ap50']:.3f} (the ceiling under the median threshold).")
    curve = report["val_ap50_by_epoch"]
    w = cfg["warmup_epochs"]
    if report["fnac_active"] and w < len(curve):
        start = f"{curve[w - 1]:.3f} at the end of the {w}-epoch NCE warm-up" if w > 0 else "the start (no warm-up)"
        best = max(curve[w:])
        collapsed = w > 0 and best < 0.5 * max(curve[:w])
        lines.append(f"Once the FNAC terms joined, validation AP50 went from {start} to at best {best:.3f} and "
                     f"{curve[-1]:.3f} at the last epoch"
                     + (": a collapse, the FNAC terms destroyed what the warm-up had learned." if collapsed else "."))
    if report.get("fn_ratio") is not None:
        lines.append(f"Training batches of {cfg['batch_size']} had a false-negative ratio of {100 * report['fn_ratio']:.1f} % "
                     f"on average (the paper's VGG-Sound batches: 39.27 % at 128, 61.17 % at 256).")
    return lines
