"""False-negative statistics of batches and the class-biased sampler of the FNAC pilot experiment.

Both batch samplers shard for data-parallel training: with ``world_size`` processes every rank draws
the same global batch of ``batch_size`` indices (same seed, same epoch) and keeps the contiguous slice
``[rank * b, (rank + 1) * b)`` with ``b = batch_size / world_size``. Concatenating the ranks' slices in
rank order gives back the single-process batch.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
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


def expected_false_negative_ratio(labels, batch_size: int, *, with_replacement: bool = False) -> float:
    """Expected :func:`false_negative_ratio` of a uniformly random batch of a dataset with these ``labels``.

    Without replacement (default; exact for :class:`ShuffledBatchSampler` and for :class:`ClassBiasedBatchSampler`
    with ``p = 0``): with ``N`` samples, ``n_c`` of class ``c``, a member of class ``c`` has no same-class partner
    with probability ``C(N - n_c, B - 1) / C(N - 1, B - 1)``, so

        E[FN ratio] = sum_c (n_c / N) * (1 - C(N - n_c, B - 1) / C(N - 1, B - 1)).

    ``with_replacement=True``: ``B`` independent draws from the class frequencies ``p_c = n_c / N`` (the limit
    of a large dataset; ``labels=range(k)`` gives ``k`` uniform classes):

        E[FN ratio] = sum_c p_c * (1 - (1 - p_c) ** (B - 1)).
    """
    arr = _as_array(labels)
    n = arr.size
    _, counts = np.unique(arr, return_counts=True)
    if with_replacement:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        p = counts / n
        return float((p * (1.0 - (1.0 - p) ** (batch_size - 1))).sum())
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")

    def log_comb(a: int, b: int) -> float:
        return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)

    total = 0.0
    for n_c in counts.tolist():
        lonely = 0.0 if n - n_c < batch_size - 1 else math.exp(log_comb(n - n_c, batch_size - 1)
                                                               - log_comb(n - 1, batch_size - 1))
        total += n_c / n * (1.0 - lonely)
    return total


def fn_ratio_table(batch_sizes: Sequence[int], class_counts: Sequence[int]) -> pd.DataFrame:
    """Expected FN ratio of ``k`` uniform classes drawn with replacement, one row per (``n_classes``, ``batch_size``)."""
    rows = [{"n_classes": k, "batch_size": b,
             "fn_ratio": expected_false_negative_ratio(np.arange(k), b, with_replacement=True)}
            for k in class_counts for b in batch_sizes]
    return pd.DataFrame(rows)


def _check_shard(batch_size: int, rank: int, world_size: int) -> int:
    """The per-rank batch size, after checking the shard arguments."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
    return batch_size // world_size


class ClassBiasedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches biased towards one class, as in the FNAC pilot experiment (Table S1).

    For each batch one class is picked uniformly at random among the classes present; each of the
    ``batch_size`` slots then comes from that class with probability ``p`` and otherwise uniformly
    from the dataset. The class's members are drawn without replacement while it has enough of them
    and with replacement beyond; the uniform slots are drawn without replacement from the indices not
    already in the batch. ``p = 0`` gives plain random batches. Reproducible from ``seed``; call
    :meth:`set_epoch` to draw a different sequence each epoch. ``batch_size`` is the global batch; with
    ``world_size > 1`` this rank yields its slice of it (see the module docstring).
    """

    def __init__(self, labels: Sequence, batch_size: int, p: float, *, num_batches: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        arr = _as_array(labels)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if batch_size > len(arr):
            raise ValueError(f"batch_size {batch_size} exceeds the dataset size {len(arr)}")
        self.batch_size, self.p, self.seed, self.epoch = batch_size, float(p), seed, 0
        self.rank, self.world_size = rank, world_size
        self.local_batch_size = _check_shard(batch_size, rank, world_size)
        self.num_batches = len(arr) // batch_size if num_batches is None else int(num_batches)
        self.classes, inverse = np.unique(arr, return_inverse=True)
        self.members = [np.flatnonzero(inverse == k) for k in range(len(self.classes))]
        self.size = len(arr)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        start = self.rank * self.local_batch_size
        for batch in self.global_batches():
            yield batch[start : start + self.local_batch_size]

    def global_batches(self) -> Iterator[list[int]]:
        """The whole batches of this epoch (what every rank's slices add up to)."""
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
    """Each epoch a fresh permutation of the dataset cut into full batches (the last partial one dropped).

    ``batch_size`` is the global batch; with ``world_size > 1`` this rank yields its slice of it.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not 1 <= batch_size <= size:
            raise ValueError(f"batch_size must be in [1, {size}], got {batch_size}")
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, 0
        self.rank, self.world_size = rank, world_size
        self.local_batch_size = _check_shard(batch_size, rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        start = self.rank * self.local_batch_size
        for batch in self.global_batches():
            yield batch[start : start + self.local_batch_size]

    def global_batches(self) -> Iterator[list[int]]:
        """The whole batches of this epoch (what every rank's slices add up to)."""
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        for b in range(len(self)):
            yield perm[b * self.batch_size : (b + 1) * self.batch_size].tolist()


def epoch_batch_sampler(labels, batch_size: int, *, class_bias_p: float = 0.0, seed: int = 0, epoch: int = 0,
                        rank: int = 0, world_size: int = 1):
    """The batch sampler of one epoch: class-biased with probability ``class_bias_p`` > 0, else plain shuffled
    batches; ``batch_size`` is the global batch, of which this ``rank`` draws its slice."""
    shard = dict(seed=seed, rank=rank, world_size=world_size)
    if class_bias_p > 0:
        sampler = ClassBiasedBatchSampler(labels, batch_size, class_bias_p, **shard)
    else:
        sampler = ShuffledBatchSampler(len(labels), batch_size, **shard)
    sampler.set_epoch(epoch)
    return sampler
