"""Small shared helpers: errors, devices, seeding, map normalisation, atomic file writes, torch files loaded as data
only, output-folder locks."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import pickle
import random
import re
import socket
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import yaml

try:
    import fcntl
except ImportError:  # not a POSIX system: output folders are not locked
    fcntl = None

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FnacError(RuntimeError):
    """An error the command line reports as one line (bad input, missing file, ...)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``docker stop``), raised where Ctrl-C raises ``KeyboardInterrupt`` and handled alike."""


def describe(exc: BaseException, limit: int = 200) -> str:
    """``"Type: first line of the message"``, cut to ``limit`` characters: a library's error inside a one-line report."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: What the CPU allocator's error says when memory runs out (torch raises a plain RuntimeError for it).
CPU_OUT_OF_MEMORY = "DefaultCPUAllocator: can't allocate memory"


@contextmanager
def out_of_memory_as_error(settings: str, lower: str) -> Iterator[None]:
    """Running out of memory inside the body, on the GPU (``torch.OutOfMemoryError``) or on the CPU (torch's
    allocator, or Python's ``MemoryError``), becomes one :class:`FnacError` line naming the ``settings`` that took
    the memory (``"batch_size=192 and image_size=224"``) and how to ``lower`` them (``"--set batch_size=N"``)."""
    def error(where: str) -> FnacError:
        return FnacError(f"out of memory on {where} with {settings}; lower {lower}")

    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise error("the GPU" if "CUDA" in str(exc) else "the device") from None
    except MemoryError:
        raise error("the CPU") from None
    except RuntimeError as exc:
        if CPU_OUT_OF_MEMORY not in str(exc):
            raise
        raise error("the CPU") from None


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FnacError(f"device={name!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def preserved_random_state() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random streams (CPU and every CUDA device) on exit, so that
    work done inside (a seeded pretraining, say) leaves the caller drawing what it would have drawn without it."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def process_pool(workers: int, initializer=None):
    """A ``multiprocessing`` pool of ``workers`` processes (None for one: the work then runs in this process).

    Workers come from a fork server where the platform has one (Linux), not from a fork of this process: a fork
    copies this process's threads' locks in whatever state they are (torch's, tqdm's, a test runner's) and every
    open file descriptor, so a forked worker can hang on a lock no thread will release, or keep a parent's pipe
    open after the parent has gone. The work function and ``initializer`` must be importable module functions."""
    if workers <= 1:
        return None
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else None)
    return context.Pool(workers, initializer=initializer)


def epoch_seed(seed: int, epoch: int) -> int:
    """A per-epoch seed, so that a run resumed at an epoch boundary draws exactly what it would have."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` (or float in [0, 1]) to ImageNet-normalised float, on the tensor's device."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def normalise_maps(maps: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Min-max normalise each map of ``[N, H, W]`` over its cells: ``(x - min) / (max - min + eps)``.

    ``eps = 0`` (the benchmark's evaluation) leaves a constant map unchanged; the TNE mask of FNAC uses
    ``eps = 1e-5`` (Sun et al., CVPR 2023), which maps a constant map to zeros.
    """
    flat = maps.flatten(1)
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo
    if eps > 0:
        return ((flat - lo) / (span + eps)).view_as(maps)
    constant = span == 0
    scaled = (flat - lo) / torch.where(constant, torch.ones_like(span), span)
    return torch.where(constant, flat, scaled).view_as(maps)


def default_file_mode() -> int:
    """The permissions ``open()`` gives a new file under the current umask (``0o666 & ~umask``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def cache_root() -> Path:
    """The workbench's cache outside any repository (pretrained backbones, fetched source packages):
    ``$FNAC_LAB_CACHE`` or ``~/.cache/fnac-lab``."""
    return Path(os.environ.get("FNAC_LAB_CACHE") or Path.home() / ".cache" / "fnac-lab").expanduser()


def stamps_benchmark_root() -> Path:
    """Where ``make stamps-benchmark`` builds the stamps benchmark and the ``stamps`` preset reads it:
    ``cache_root()/stamps-benchmark``."""
    return cache_root() / "stamps-benchmark"


def output_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as a folder, created with its parents; an empty name or an existing file there is refused with one
    line."""
    if not os.fspath(path).strip():
        raise FnacError(f"{what} is empty: name an output folder")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FnacError(f"{path}: exists and is not a folder ({what} names a folder)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, default_file_mode())  # mkstemp creates 0600; give the file the permissions open() would
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: readers never see a partial file."""
    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


class UnsafeFileError(FnacError):
    """A torch file that asks, when unpickled, for a function or class to be called: the way a pickle runs code."""


def load_torch_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """The contents of a file written by ``torch.save``, read as data only (``torch.load(weights_only=True)``).

    Torch's restricted unpickler rebuilds tensors, the containers and scalars of plain Python (dict, list, tuple,
    str, int, float, bool, None) and the few torch types a state dict holds; every file fnac-lab writes holds
    nothing else. Any other object named in the file (``os.system``, a class with a ``__reduce__``) is never
    imported or called: the file is refused with :class:`UnsafeFileError`, one line naming it and the object.
    Other failures (a missing, truncated or foreign file) raise what ``torch.load`` raises, the restricted
    unpickler's long advice cut to its reason."""
    try:
        with warnings.catch_warnings():  # a pickle protocol other than torch's own draws a warning before the refusal
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise UnsafeFileError(f"{path}: refused: it names {found.group(1)}, which loading would have to call and "
                                  f"which could run any code; fnac-lab reads tensors and plain data only") from None
        reason = re.search(r"(Unsupported operand \d+|WeightsUnpickler error: [^\n]+)", str(exc))
        raise pickle.UnpicklingError(reason.group(1) if reason else str(exc).strip().split("\n")[-1]) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    _atomic_write(Path(path), lambda fh: fh.write(text.encode()))


#: Limits of a YAML file read by :func:`read_yaml`: its size, and the nodes it holds once its aliases are expanded.
YAML_MAX_BYTES, YAML_MAX_NODES = 1 << 20, 100_000


def _expanded_nodes(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], limit: int) -> int:
    """How many nodes ``node`` stands for with every alias expanded, counted without expanding any (an alias is the
    node it names: its count is remembered). Refuses an alias inside the node it names, and counts past ``limit``."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise ValueError("an alias refers to a node that contains it")
    open_nodes.add(key)
    children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else (
        node.value if isinstance(node, yaml.SequenceNode) else [])
    total = 1
    for child in children:
        total += _expanded_nodes(child, sizes, open_nodes, limit)
        if total > limit:
            raise ValueError(f"more than {limit} values once its aliases are expanded")
    open_nodes.discard(key)
    sizes[key] = total
    return total


def read_yaml(path: str | os.PathLike, *, max_bytes: int = YAML_MAX_BYTES, max_nodes: int = YAML_MAX_NODES) -> Any:
    """A YAML file read with ``yaml.safe_load`` (plain data, no Python objects), after its size and the size of what
    its aliases expand to are checked: a file over ``max_bytes`` or standing for more than ``max_nodes`` values (an
    alias bomb, a few lines that expand to billions) is refused with one line before anything is built from it."""
    path = Path(path)
    if path.stat().st_size > max_bytes:
        raise FnacError(f"{path}: {path.stat().st_size} bytes, more than the {max_bytes} a settings file may have")
    text = path.read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise FnacError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if root is None:
        return None
    try:
        _expanded_nodes(root, {}, set(), max_nodes)
    except ValueError as exc:
        raise FnacError(f"{path}: refused: {exc}") from None
    except RecursionError:
        raise FnacError(f"{path}: refused: nested too deeply") from None
    return yaml.safe_load(text)


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` of ``arrays`` written atomically to ``path`` (a ``.npz`` file)."""
    _atomic_write(Path(path), lambda fh: np.savez_compressed(fh, **arrays))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_rows(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A csv file written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


#: The lock file a run keeps in its output folder while it writes there (:func:`folder_lock`).
LOCK_FILE = ".fnac-lab.lock"


def _lock_holder(fd: int) -> str:
    """What the lock file names (``pid N on HOST``); the holder writes it just after locking, so wait a little."""
    for _ in range(20):
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "a process that has not named itself yet"


def _is_current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (a run that finished removes its lock file)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _acquire_lock(path: Path, folder: Path, what: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, default_file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise FnacError(f"{folder}: another run is writing into this folder ({holder}); wait for it to end, "
                            f"or choose another {what}") from None
        if _is_current(fd, path):
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            return fd
        os.close(fd)  # locked a file its holder had just removed: lock the new one


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "--out") -> Iterator[None]:
    """Hold ``folder/.fnac-lab.lock`` while the body runs: a second run into the same folder (another process) is
    refused with one line naming the folder and the process that holds it.

    The lock is an ``flock`` on the file: the operating system releases it when its process ends, however it ends,
    so a killed run never blocks the rerun (its lock file stays behind and is taken over). A run that ends normally
    removes the file. Only ``folder`` itself is locked, never its parents: a grid and the runs it starts in its
    point folders lock different folders. Without ``fcntl`` (not a POSIX system) nothing is locked."""
    if fcntl is None:
        yield
        return
    folder = Path(folder)
    path = folder / LOCK_FILE
    fd = _acquire_lock(path, folder, what)
    try:
        yield
    finally:
        if _is_current(fd, path):
            path.unlink()
        os.close(fd)
