"""What the training, scoring and analysis loops ask of a dataset, as protocols (PEP 544), in place of scattered
attribute probes.

Every dataset is map-style (``len(ds)``, ``ds[i]`` a dict with ``image`` uint8 ``[3, H, W]``, ``spec``, ``id`` and
``label``). Two kinds say more:

- :class:`InMemoryData` hands out whole batches (``batch(indices)``), as the built-in data does, generated in
  memory: the loops then build no ``DataLoader``;
- :class:`CollatedData` needs its own ``collate`` (the real clips: boxes of varying count, spectrogram widths).

What some datasets know besides: each sample's class code up front (:class:`ClassLabelled`: class-biased sampling
and false-negative ratios), class names (:class:`ClassNamed`), the silent objects in each frame
(:class:`WithDistractors`, the built-in data), listed ids absent on disk (:class:`ListsMissing`), and whether a split
holds the extended protocol's negatives (:class:`NegativesSplit`).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class InMemoryData(Protocol):
    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int]) -> dict[str, Any]: ...


@runtime_checkable
class CollatedData(Protocol):
    def collate(self, items: list[dict]) -> dict[str, Any]: ...


@runtime_checkable
class ClassLabelled(Protocol):
    labels: torch.Tensor  #: each sample's integer class code, ``[N]``


@runtime_checkable
class ClassNamed(Protocol):
    class_names: Sequence[str]  #: the name of each class code


@runtime_checkable
class WithDistractors(Protocol):
    distractor_boxes: torch.Tensor  #: each frame's silent objects' boxes, padded with -1


@runtime_checkable
class ListsMissing(Protocol):
    missing: list[tuple[str, str]]  #: (id, reason) of each listed id absent on disk


@runtime_checkable
class NegativesSplit(Protocol):
    negatives: bool  #: True for a split of the extended protocol's negatives (no ground truth)


def collate_fn(dataset) -> Callable[[list[dict]], dict] | None:
    """The dataset's own collate function, or None for the default one."""
    return dataset.collate if isinstance(dataset, CollatedData) else None


def whole_batch(dataset, indices: Sequence[int]) -> dict[str, Any]:
    """The samples ``indices`` as one batch: the dataset's ``batch`` when it has one, else its items collated."""
    if isinstance(dataset, InMemoryData):
        return dataset.batch(list(indices))
    return (collate_fn(dataset) or torch.utils.data.default_collate)([dataset[i] for i in indices])
