"""Video preparation on clips generated here with PyAV: middle frame, audio track, failures, resuming."""

from __future__ import annotations

import csv
import os

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

from fnac_lab.cli import main
from fnac_lab.data import prepare

FPS = 10


def frame_value(i: int) -> int:
    return (i * 11) % 256


def make_clip(path, *, n_frames=20, rate=22050, channels=2, tone=440.0, audio=True, size=(64, 48)) -> None:
    """Frame i is a flat grey of value frame_value(i); the audio a sine of ``tone`` Hz as long as the video."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264" if path.suffix == ".mp4" else "mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        if audio:
            stream = container.add_stream("aac", rate=rate)
            stream.layout = "stereo" if channels == 2 else "mono"
        for i in range(n_frames):
            pixels = np.full((size[1], size[0], 3), frame_value(i), np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio:
            t = np.arange(int(rate * n_frames / FPS)) / rate
            x = np.repeat((0.3 * np.sin(2 * np.pi * tone * t)).astype(np.float32)[None], channels, axis=0)
            for k in range(0, x.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, k : k + 1024]), format="fltp",
                                                   layout=stream.layout.name)
                frame.sample_rate = rate
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    make_clip(root / "even.mp4", n_frames=20, rate=22050, channels=2, tone=440.0)
    (root / "nested").mkdir()
    make_clip(root / "nested" / "odd.mp4", n_frames=21, rate=16000, channels=1, tone=1000.0)
    make_clip(root / "other.mkv", n_frames=16, rate=16000, channels=1, tone=700.0)
    make_clip(root / "silent.mp4", audio=False)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (root / "notes.txt").write_text("not a video")
    return root


def read_failed(root) -> dict[str, str]:
    with open(root / "failed.csv", newline="") as fh:
        return {r["id"]: r["reason"] for r in csv.DictReader(fh)}


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def test_prepare_parallel_then_resume(videos, tmp_path, capsys):
    out = tmp_path / "root"
    assert main(["prepare", "--videos", str(videos), "--out", str(out), "--workers", "2", "--quiet"]) == 0
    assert "3 clips prepared, 0 already done, 2 failed" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["even.jpg", "odd.jpg", "other.jpg"]
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["even.wav", "odd.wav", "other.wav"]
    failed = read_failed(out)
    assert set(failed) == {"silent", "broken"} and "no audio stream" in failed["silent"]
    # middle frame: the frame shown at half the duration, index n // 2 for n frames at a constant rate
    for ident, n in (("even", 20), ("odd", 21)):
        pixels = np.asarray(Image.open(out / "frames" / f"{ident}.jpg"), dtype=float)
        assert pixels.shape == (48, 64, 3)
        assert abs(pixels.mean() - frame_value(n // 2)) < 4 < abs(frame_value(n // 2 + 1) - frame_value(n // 2))
    # audio: native rate and channels, the clip's tone, about the clip's length, 16-bit PCM
    for ident, rate, channels, tone, seconds in (("even", 22050, 2, 440.0, 2.0), ("odd", 16000, 1, 1000.0, 2.1)):
        info = soundfile.info(str(out / "audio" / f"{ident}.wav"))
        assert (info.samplerate, info.channels, info.subtype) == (rate, channels, "PCM_16")
        assert abs(info.duration - seconds) < 0.15
        x, _ = soundfile.read(str(out / "audio" / f"{ident}.wav"), always_2d=True)
        assert dominant_frequency(x[:, 0], rate) == pytest.approx(tone, abs=2.0)
        assert np.sqrt(np.mean(x[len(x) // 4 : -len(x) // 4] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".jpg", ".wav")}
    assert main(["prepare", "--videos", str(videos), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert "0 clips prepared, 3 already done, 2 failed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".jpg", ".wav")} == before
    assert set(read_failed(out)) == {"silent", "broken"}


def test_resampling_on_request(videos, tmp_path):
    report = prepare.prepare_videos(videos / "nested", tmp_path, sample_rate=8000, progress=False)
    assert report.n_done == 1
    x, rate = soundfile.read(str(tmp_path / "audio" / "odd.wav"))
    assert rate == 8000 and dominant_frequency(x, rate) == pytest.approx(1000.0, abs=2.0)


def test_a_killed_run_leaves_no_half_file(videos, tmp_path, monkeypatch):
    original = Image.Image.save

    def crash(self, fp, *args, **kwargs):
        with open(fp, "wb") as fh:
            fh.write(b"\xff\xd8 half a jpeg")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_videos(videos / "nested", tmp_path, progress=False)
    assert list((tmp_path / "frames").iterdir()) == []  # neither the frame nor its temporary file
    assert [p.name for p in (tmp_path / "audio").iterdir()] == ["odd.wav"]  # complete: written before the frame
    monkeypatch.setattr(Image.Image, "save", original)
    report = prepare.prepare_videos(videos / "nested", tmp_path, progress=False)
    assert (report.n_done, report.n_existing) == (1, 0)
    assert Image.open(tmp_path / "frames" / "odd.jpg").size == (64, 48)


def test_duplicate_ids_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"")
    (tmp_path / "b" / "x.mkv").write_bytes(b"")
    with pytest.raises(prepare.FnacError, match="two videos for id 'x'"):
        prepare.find_videos(tmp_path)
