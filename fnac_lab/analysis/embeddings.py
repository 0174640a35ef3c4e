"""Per-sample embeddings of a split, their 2-D UMAP projection, and nearest-neighbour class accuracy."""

from __future__ import annotations

import numpy as np
import torch

from ..losses import TNE_THRESHOLD, intra_modal_embeddings
from ..data.contracts import whole_batch
from ..models import Localiser
from .adjacency import embed_batch


@torch.no_grad()
def collect_embeddings(model: Localiser, dataset, *, batch_size: int = 64,
                       tne_threshold: float | None = TNE_THRESHOLD, device: torch.device | str = "cpu",
                       max_samples: int | None = None) -> dict[str, np.ndarray]:
    """Per-sample embeddings of a split (:func:`~fnac_lab.losses.intra_modal_embeddings`: ``audio``, the frame mean
    ``visual`` and the TNE-pooled ``foreground``), with ``labels`` and ``ids``."""
    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    out: dict[str, list] = {"audio": [], "visual": [], "foreground": [], "labels": [], "ids": []}
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        batch = whole_batch(dataset, idx)
        img, aud = embed_batch(model, batch, device=device)
        for name, x in intra_modal_embeddings(img, aud, model.tau, tne_threshold).items():
            out[name].append(x.numpy())
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
