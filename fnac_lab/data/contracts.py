"""What the training, scoring and analysis loops ask of a dataset, as protocols (PEP 544), in place of scattered
attribute probes.

Every dataset is map-style (``len(ds)``, ``ds[i]`` a dict with ``image`` uint8 ``[3, H, W]``, ``spec``, ``id`` and
``label``). Two kinds say more:

- :class:`InMemoryData` hands out whole batches (``batch(indices)``), as the built-in data does, generated in
  memory: the loops then build no ``DataLoader``;
- :class:`CollatedData` needs its own ``collate`` (the real clips: boxes of varying count, spectrogram widths).
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


def collate_fn(dataset) -> Callable[[list[dict]], dict] | None:
    """The dataset's own collate function, or None for the default one."""
    return dataset.collate if isinstance(dataset, CollatedData) else None


def whole_batch(dataset, indices: Sequence[int]) -> dict[str, Any]:
    """The samples ``indices`` as one batch: the dataset's ``batch`` when it has one, else its items collated."""
    if isinstance(dataset, InMemoryData):
        return dataset.batch(list(indices))
    return (collate_fn(dataset) or torch.utils.data.default_collate)([dataset[i] for i in indices])
