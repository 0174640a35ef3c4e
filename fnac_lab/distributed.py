"""Data-parallel helpers: process groups from torchrun's environment, rank queries, and the global gather.

``torchrun --nproc_per_node N -m fnac_lab train ...`` starts N processes with ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`process_group` joins them (NCCL when the
process drives a GPU, gloo on CPU) and leaves again on exit; outside torchrun every helper here is
the single-process identity, so the same training code runs both ways.

Global negatives: every rank gathers the visual maps and audio embeddings of all ranks with
:func:`all_gather_with_grad` and computes the loss over the global batch. The gather's backward
(``torch.distributed.nn.functional.all_gather``) hands each rank the *sum over ranks* of the gradient
with respect to its slice. Every rank computes the same global loss ``L``, so that sum is
``world_size * dL/dx_r``; DDP then *averages* the parameter gradients over ranks, which divides the
factor out again: the update equals the single-process update on the concatenated batch, with no
extra scaling of the loss.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn as nn

from .utils import FnacError, resolve_device

#: How long ranks wait for each other in a collective (rank 0 validates while the others wait).
TIMEOUT = datetime.timedelta(minutes=60)


def is_initialized() -> bool:
    """Whether this process belongs to an initialised default process group."""
    return dist.is_available() and dist.is_initialized()


def env_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def get_rank() -> int:
    """This process's rank: from the process group when there is one, else torchrun's ``RANK`` (0 outside)."""
    return dist.get_rank() if is_initialized() else int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    """Processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0: the process that logs, evaluates and writes files."""
    return get_rank() == 0


def rank_device(name: str = "auto") -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` under torchrun with CUDA, else :func:`resolve_device`."""
    device = resolve_device(name)
    if env_world_size() > 1 and device.type == "cuda":
        if name not in ("auto", "cuda"):
            raise FnacError(f"device={name!r}: under torchrun each process uses cuda:LOCAL_RANK; "
                            f"set device=cuda or auto")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_process_group(device: torch.device) -> bool:
    """Join torchrun's process group (NCCL for CUDA, gloo otherwise); True when this call created it.

    Does nothing when the group exists already or when ``WORLD_SIZE`` is 1.
    """
    if is_initialized() or env_world_size() <= 1:
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", timeout=TIMEOUT, device_id=device)
    else:
        dist.init_process_group(backend="gloo", timeout=TIMEOUT)
    return True


@contextmanager
def process_group(device_name: str = "auto") -> Iterator[torch.device]:
    """Join the process group for the duration of the block (if torchrun asks for one); yields the device."""
    device = rank_device(device_name)
    created = init_process_group(device)
    try:
        yield device
    finally:
        if created:
            dist.destroy_process_group()


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenation over ranks, in rank order, along dim 0; gradients flow back to every rank's slice.

    Uses ``torch.distributed.nn.functional.all_gather``: rank ``r`` receives the sum over ranks of the
    gradient with respect to its slice. The identity when not distributed.
    """
    if get_world_size() == 1:
        return tensor
    parts = dist_nn.all_gather(tensor)
    if tensor.requires_grad:
        # gloo's scatter, which carries that backward on CPU, garbles non-contiguous gradients (e.g. the
        # transposed gradient of a matrix product); hand it contiguous ones
        for part in parts:
            part.register_hook(torch.Tensor.contiguous)
    return torch.cat(parts, dim=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over ranks (a new tensor; the identity when not distributed)."""
    if get_world_size() == 1:
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; tensors in it should live on the CPU)."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for all ranks (no-op when not distributed)."""
    if get_world_size() > 1:
        dist.barrier()


def wrap_model(model: nn.Module, device: torch.device, *, sync_batchnorm: bool = False) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when distributed (else returned as it is).

    With ``sync_batchnorm`` the batch norms are converted in place to :class:`torch.nn.SyncBatchNorm`
    (statistics over the global batch; parameters and buffers keep their names, so checkpoints stay
    interchangeable). Without it each rank normalises with the statistics of its own shard, which
    differ from single-process statistics over the whole batch. PyTorch's SyncBatchNorm runs on GPUs only.
    """
    if get_world_size() == 1:
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise FnacError("sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm does not run on CPU)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the root module object is kept
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
