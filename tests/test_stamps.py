"""Tux Paint's stamps as a source: the committed class table, the source's files, and the one-line refusals.
Tests that read the source skip without it (``make stamps`` fetches it; CI does)."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from fnac_lab.cli import main
from fnac_lab.data import stamps as st

TABLES = Path(__file__).resolve().parents[1] / "data" / "stamps"


def rows(name: str) -> list[dict]:
    with open(TABLES / name, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def source() -> st.StampsSource:
    if not (st.default_source() / "stamps").is_dir():
        pytest.skip(f"Tux Paint stamps are not fetched into {st.default_source()} (make stamps)")
    return st.open_source()


def test_class_table_has_every_role_per_class():
    by_class = defaultdict(list)
    for row in rows("classes.csv"):
        by_class[row["class"]].append(row["role"])
    assert 15 <= len(by_class) <= 20
    assert sum(len(r) >= 3 for r in by_class.values()) >= 8
    for label, roles in by_class.items():
        if "heldout_class" in roles:
            assert set(roles) == {"heldout_class"}, label
        else:
            assert "train" in roles and "heldout_stamp" in roles, label
    assert sum("heldout_class" in r for r in by_class.values()) >= 2
    used = {row["stamp"] for row in rows("classes.csv")}
    excluded = {row["stamp"] for row in rows("excluded.csv")}
    assert not used & excluded and all(row["reason"] for row in rows("excluded.csv"))
    assert [s.name for s in st.read_class_table()] == [row["stamp"] for row in rows("classes.csv")]


def test_backgrounds_table():
    roles = defaultdict(list)
    for row in rows("backgrounds.csv"):
        roles[row["role"]].append(row["background"])
        assert row["role"] != "excluded" or row["reason"]
    assert len(roles["train"]) >= 8 and len(roles["eval"]) >= 3


def test_every_listed_file_is_in_the_source(source):
    assert st.missing_files(source, st.read_class_table(), st.read_backgrounds()) == []


def test_every_sounding_stamp_is_used_or_excluded_with_a_reason(source):
    listed = [row["stamp"] for row in rows("classes.csv")] + [row["stamp"] for row in rows("excluded.csv")]
    unlisted = []
    for path in sorted(source.stamps.rglob("*.ogg")):
        name = path.relative_to(source.stamps).with_suffix("").as_posix()
        if "_desc" in path.name:
            continue
        if not any(name == s or name.startswith(s + "/") for s in listed):
            unlisted.append(name)
    assert unlisted == []


def test_used_stamps_have_an_object_and_a_recording_to_place(source):
    for stamp in st.read_class_table():
        with Image.open(stamp.file(source.stamps, "picture")) as im:
            assert "A" in im.getbands(), stamp.name
            alpha = np.asarray(im.getchannel("A"))
            assert (alpha > 0).mean() > 0.05 and max(im.size) >= 100, stamp.name
        samples, rate = soundfile.read(str(stamp.file(source.stamps, "recording")), always_2d=True)
        assert len(samples) >= 0.3 * rate and np.abs(samples).max() > 0.05, stamp.name
        assert stamp.description(source.stamps) is not None, stamp.name


def test_the_checkable_reasons_for_leaving_a_stamp_out_hold(source):
    for row in rows("excluded.csv"):
        picture, recording = (source.stamps / (row["stamp"] + ext) for ext in (".png", ".ogg"))
        if row["reason"].startswith("no png picture"):
            assert not picture.exists(), row
        elif row["reason"] == "cut-out under 100 px":
            with Image.open(picture) as im:
                assert max(im.size) < 100, row
        elif row["reason"] == "recording under 0.3 s":
            assert soundfile.info(str(recording)).duration < 0.3, row
        elif row["reason"].startswith("the recording is silent"):
            assert not soundfile.read(str(recording))[0].any(), row


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_missing_source_says_how_to_get_one(tmp_path, capsys):
    err = one_line_error(capsys, ["stamps", "check", "--source", str(tmp_path)])
    assert str(tmp_path) in err and "fnac-lab stamps fetch" in err and "make stamps" in err


def test_a_partial_source_names_the_first_missing_file(tmp_path, capsys):
    (tmp_path / "stamps" / "animals").mkdir(parents=True)
    err = one_line_error(capsys, ["stamps", "check", "--source", str(tmp_path)])
    assert "missing from the source" in err and "blackbird.png" in err


def test_fetch_without_the_package_tools_or_lists_is_one_line(tmp_path, capsys, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    err = one_line_error(capsys, ["stamps", "fetch", "--cache", str(tmp_path / "cache")])
    assert "apt-get not found" in err and "--source" in err
    fake = bin_dir / "apt-get"
    fake.write_text("#!/bin/sh\necho 'E: Unable to locate package tuxpaint-data' >&2\nexit 100\n")
    fake.chmod(0o755)
    err = one_line_error(capsys, ["stamps", "fetch", "--cache", str(tmp_path / "cache")])
    assert "Unable to locate package" in err and "apt-get update" in err
    assert not (tmp_path / "cache" / "tree").exists() and os.listdir(tmp_path / "cache") == []
