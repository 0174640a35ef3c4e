"""False-negative statistics of batches and the class-biased sampler of the FNAC pilot experiment."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch


def _as_array(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {arr.shape}")
    return arr


def false_negative_ratio(labels) -> float:
    """Share of a batch's members whose class occurs at least twice in the batch.

    For such a member, contrastive learning treats at least one same-class pair as a negative.
    ``labels``: a sequence, array or tensor of class ids or names (one per member).
    """
    arr = _as_array(labels)
    if arr.size == 0:
        raise ValueError("false_negative_ratio of an empty batch")
    _, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    return float((counts[inverse] >= 2).mean())


class ClassBiasedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches biased towards one class, as in the FNAC pilot experiment (Table S1).

    For each batch one class is picked uniformly at random among the classes present; each of the
    ``batch_size`` slots then comes from that class with probability ``p`` and otherwise uniformly
    from the dataset. The class's members are drawn without replacement while it has enough of them
    and with replacement beyond; the uniform slots are drawn without replacement from the indices not
    already in the batch. ``p = 0`` gives plain random batches. Reproducible from ``seed``; call
    :meth:`set_epoch` to draw a different sequence each epoch.
    """

    def __init__(self, labels: Sequence, batch_size: int, p: float, *, num_batches: int | None = None, seed: int = 0):
        arr = _as_array(labels)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if batch_size > len(arr):
            raise ValueError(f"batch_size {batch_size} exceeds the dataset size {len(arr)}")
        self.batch_size, self.p, self.seed, self.epoch = batch_size, float(p), seed, 0
        self.num_batches = len(arr) // batch_size if num_batches is None else int(num_batches)
        self.classes, inverse = np.unique(arr, return_inverse=True)
        self.members = [np.flatnonzero(inverse == k) for k in range(len(self.classes))]
        self.size = len(arr)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.num_batches):
            members = self.members[rng.integers(len(self.classes))]
            from_class = rng.random(self.batch_size) < self.p
            k = int(from_class.sum())
            if k <= len(members):
                picked = rng.choice(members, size=k, replace=False)
            else:
                picked = np.concatenate([rng.permutation(members), rng.choice(members, size=k - len(members))])
            rest = np.setdiff1d(np.arange(self.size), picked, assume_unique=False)
            uniform = rng.choice(rest, size=self.batch_size - k, replace=False)
            batch = np.empty(self.batch_size, dtype=np.int64)
            batch[from_class] = picked
            batch[~from_class] = uniform
            yield batch.tolist()


class ShuffledBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Each epoch a fresh permutation of the dataset cut into full batches (the last partial one dropped)."""

    def __init__(self, size: int, batch_size: int, *, seed: int = 0):
        if not 1 <= batch_size <= size:
            raise ValueError(f"batch_size must be in [1, {size}], got {batch_size}")
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        for b in range(len(self)):
            yield perm[b * self.batch_size : (b + 1) * self.batch_size].tolist()
