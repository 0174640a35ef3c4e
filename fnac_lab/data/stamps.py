"""Tux Paint's stamps as a source of real sounds and pictures: cut-out photographs of real objects (the object is
the alpha channel), many with a recording of that object (``cow.png`` beside ``cow.ogg``, a cow lowing) and a
spoken description (``cow_desc.ogg``, "A cow.", for most stamps also in other languages), and landscape photographs (``templates/*.jpg``) for backgrounds.

A *source* is a folder holding ``stamps/`` and, for backgrounds, ``templates/``: Tux Paint's installed
``/usr/share/tuxpaint``, the Debian packages extracted by :func:`fetch` (``tuxpaint-stamps-default``, GPL-2;
``tuxpaint-data``, GPL-2+), or the upstream Tux Paint stamps tree (same ``stamps/`` layout; its backgrounds then come
from elsewhere). Nothing of it is kept in the repository: :func:`fetch` extracts the packages into the workbench's
cache (:func:`fnac_lab.utils.cache_root`).

Which stamps are used, and how, is a committed table (``data/stamps/``):

- ``classes.csv``: ``stamp,class,role`` for every sounding stamp used, ``stamp`` its path under ``stamps/``
  without extension and ``role`` one of :data:`ROLES`;
- ``excluded.csv``: ``stamp,reason`` for the sounding stamps left out (a folder excludes everything under it);
- ``backgrounds.csv``: ``background,role,reason``, ``role`` one of :data:`BACKGROUND_ROLES`.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..utils import FnacError, cache_root

#: The Debian packages of the source and their licences (debian/copyright of each).
PACKAGES = {"tuxpaint-stamps-default": "GPL-2", "tuxpaint-data": "GPL-2+"}
#: The committed tables (``classes.csv``, ``excluded.csv``, ``backgrounds.csv``).
TABLES = Path(__file__).resolve().parents[2] / "data" / "stamps"
#: A stamp's role: seen in training; a held-out stamp of a class seen in training; a stamp of a class never seen.
ROLES = ("train", "heldout_stamp", "heldout_class")
#: A background's role: behind training pictures; behind validation and test pictures only; not used.
BACKGROUND_ROLES = ("train", "eval", "excluded")
#: The files every stamp of the table has, by what they hold, as suffixes of its name.
STAMP_FILES = {"picture": ".png", "recording": ".ogg"}
#: How to get a source, for the one line that says it is missing.
HOW_TO_GET = ("run `fnac-lab stamps fetch` (or `make stamps`), or pass --source with an installed /usr/share/tuxpaint "
              "or the upstream Tux Paint stamps tree")


@dataclass(frozen=True)
class Stamp:
    """One sounding stamp of the class table: ``name`` is its path under ``stamps/`` without extension."""

    name: str
    label: str
    role: str

    def file(self, stamps: Path, kind: str) -> Path:
        """The stamp's ``picture`` or ``recording`` file under the ``stamps`` folder."""
        return stamps / (self.name + STAMP_FILES[kind])

    def description(self, stamps: Path) -> Path | None:
        """The spoken description: English (``NAME_desc.ogg``) when present, else the first other language
        (``NAME_desc_LANG.ogg``, by name); ``None`` for a stamp without one."""
        english = stamps / (self.name + "_desc.ogg")
        if english.is_file():
            return english
        others = sorted(english.parent.glob(Path(self.name).name + "_desc_*.ogg"))
        return others[0] if others else None


@dataclass(frozen=True)
class Background:
    path: str  # relative to the source
    role: str
    reason: str


@dataclass(frozen=True)
class StampsSource:
    """The folders of a source: ``stamps/`` and the backgrounds' folder (``None`` when the source has none)."""

    stamps: Path
    backgrounds: Path | None


def default_source() -> Path:
    """Where :func:`fetch` extracts the packages: the installed layout under the cache."""
    return cache_root() / "stamps" / "tree" / "usr" / "share" / "tuxpaint"


def open_source(source: str | os.PathLike | None = None, *, backgrounds: str | os.PathLike | None = None
                ) -> StampsSource:
    """The source at ``source`` (default :func:`default_source`), its backgrounds from ``backgrounds`` or its own
    ``templates/``; a missing source is refused in one line that says how to get one."""
    root = Path(source) if source is not None else default_source()
    if not (root / "stamps").is_dir():
        raise FnacError(f"{root}: no stamps/ folder, so no Tux Paint stamps source is there; {HOW_TO_GET}")
    folder = Path(backgrounds) if backgrounds is not None else root / "templates"
    if backgrounds is not None and not folder.is_dir():
        raise FnacError(f"--backgrounds {folder}: folder not found")
    return StampsSource(stamps=root / "stamps", backgrounds=folder if folder.is_dir() else None)


def _read_rows(path: Path, header: list[str]) -> list[list[str]]:
    if not path.is_file():
        raise FnacError(f"{path}: table not found")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0] != header:
        raise FnacError(f"{path}: the header must be {','.join(header)}")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise FnacError(f"{path}:{line}: {len(row)} columns where {len(header)} are expected")
    return rows[1:]


def read_class_table(path: str | os.PathLike = TABLES / "classes.csv") -> list[Stamp]:
    """The sounding stamps used, each with its class and role; repeats and unknown roles are refused."""
    path = Path(path)
    stamps, seen = [], set()
    for line, (name, label, role) in enumerate(_read_rows(path, ["stamp", "class", "role"]), start=2):
        if role not in ROLES:
            raise FnacError(f"{path}:{line}: role {role!r} is not one of {', '.join(ROLES)}")
        if name in seen:
            raise FnacError(f"{path}:{line}: stamp {name!r} is listed twice")
        if not label or Path(name).is_absolute() or ".." in Path(name).parts:
            raise FnacError(f"{path}:{line}: a stamp is a path under stamps/ and has a class")
        seen.add(name)
        stamps.append(Stamp(name, label, role))
    return stamps


def read_exclusions(path: str | os.PathLike = TABLES / "excluded.csv") -> dict[str, str]:
    """The sounding stamps (or folders) left out, each with the reason."""
    return {name: reason for name, reason in _read_rows(Path(path), ["stamp", "reason"])}


def read_backgrounds(path: str | os.PathLike = TABLES / "backgrounds.csv") -> list[Background]:
    path = Path(path)
    found = []
    for line, (name, role, reason) in enumerate(_read_rows(path, ["background", "role", "reason"]), start=2):
        if role not in BACKGROUND_ROLES:
            raise FnacError(f"{path}:{line}: role {role!r} is not one of {', '.join(BACKGROUND_ROLES)}")
        found.append(Background(name, role, reason))
    return found


def missing_files(source: StampsSource, stamps: list[Stamp], backgrounds: list[Background]) -> list[str]:
    """Every file the tables name that the source lacks (empty when the source is complete)."""
    missing = [str(s.file(source.stamps, kind)) for s in stamps for kind in STAMP_FILES
               if not s.file(source.stamps, kind).is_file()]
    used = [b for b in backgrounds if b.role != "excluded"]
    if source.backgrounds is None:
        return missing + [f"{b.path} (the source has no templates/ folder; pass --backgrounds)" for b in used]
    return missing + [str(source.backgrounds / Path(b.path).name) for b in used
                      if not (source.backgrounds / Path(b.path).name).is_file()]


def _run(cmd: list[str], cwd: Path) -> str:
    if shutil.which(cmd[0]) is None:
        raise FnacError(f"{cmd[0]} not found: fetching the stamps needs Debian's package tools; otherwise pass "
                        f"--source with an installed /usr/share/tuxpaint or the upstream Tux Paint stamps tree")
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [f"exit status {done.returncode}"]
        hint = " (the package lists may be empty: `apt-get update` as root)" if cmd[0] == "apt-get" else ""
        raise FnacError(f"{' '.join(cmd)}: {last[0]}{hint}")
    return done.stdout


def fetch(cache: str | os.PathLike | None = None) -> Path:
    """Download :data:`PACKAGES` by name (``apt-get download``, no root needed) and extract them
    (``dpkg-deb -x``) into ``CACHE/tree``; returns the source folder. Extraction happens in a staging folder renamed
    into place when complete, so a killed fetch leaves nothing half-written; a complete tree is reused."""
    folder = Path(cache) if cache is not None else cache_root() / "stamps"
    tree = folder / "tree"
    source = tree / "usr" / "share" / "tuxpaint"
    if (tree / "packages.txt").is_file():
        return source
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
        staging = Path(tmp)
        _run(["apt-get", "download", *PACKAGES], cwd=staging)
        versions = []
        for package in PACKAGES:
            debs = sorted(staging.glob(f"{package}_*.deb"))
            if len(debs) != 1:
                raise FnacError(f"apt-get download {package}: expected one .deb file, found {len(debs)}")
            _run(["dpkg-deb", "-x", debs[0].name, "tree"], cwd=staging)
            version = _run(["dpkg-deb", "-f", debs[0].name, "Version"], cwd=staging).strip()
            versions.append(f"{package} {version} {PACKAGES[package]}\n")
        (staging / "tree" / "packages.txt").write_text("".join(versions))
        if tree.exists():
            shutil.rmtree(tree)  # an earlier tree without packages.txt: a fetch that did not finish
        os.replace(staging / "tree", tree)
    return source
