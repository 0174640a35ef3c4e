"""The built-in audio-visual dataset: procedurally generated from a seed, no download needed.

Each sound-source class has its own look (a shape in a colour) and its own sound (a harmonic tone with
a class-specific pitch, harmonic count and amplitude modulation). Every image shows the sounding
object and one or more silent distractors of other classes, as tall boxes side by side on cluttered
background; every clip holds the sounding object's tone with pitch jitter, a random onset and offset,
a random gain and white noise. Ground-truth boxes and class labels come with every sample.

With 20 classes a batch of 64 almost always holds several samples of the same class, so the
false negatives that FNAC targets are frequent. Images are stored as uint8 (normalised later, on the
device); the audio is a standardised log-mel spectrogram.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.transforms as T

from ..metrics import gt_maps_from_boxes, vggss_boxes_to_pixels

SPLITS = ("train", "val", "test")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
#: Random streams of the single-object images (pretraining), disjoint from every audio-visual split's stream.
OBJECT_SPLITS = {"train": 3, "val": 4}

#: Saturated RGB colours, one per colour group.
PALETTE = np.array(
    [
        [230, 40, 40],  # red
        [40, 90, 230],  # blue
        [40, 190, 60],  # green
        [240, 210, 30],  # yellow
        [170, 60, 210],  # purple
        [250, 130, 20],  # orange
        [30, 200, 210],  # cyan
        [240, 80, 170],  # pink
    ],
    dtype=np.float32,
)


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a shape on box coordinates ``u, v`` in [-1, 1] (u across, v down)."""
    if kind == "ellipse":
        return u**2 + v**2 <= 1.0
    if kind == "rectangle":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.95)
    if kind == "triangle":
        return np.abs(u) <= (v + 1.0) / 2.0
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if kind == "cross":
        return (np.abs(u) <= 0.35) | (np.abs(v) <= 0.2)
    if kind == "ring":
        r = u**2 + v**2
        return (r <= 1.0) & (r >= 0.3)
    if kind == "hourglass":
        return np.abs(u) >= np.abs(v) * 0.9 - 0.05
    if kind == "stripes":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.95) & (np.floor((v + 1.0) * 3.0) % 2 == 0)
    raise ValueError(f"unknown shape {kind!r}")


SHAPES = ("ellipse", "triangle", "rectangle", "diamond", "cross", "ring", "hourglass", "stripes")


@dataclass(frozen=True)
class BuiltinSpec:
    """Generation parameters of the built-in dataset (all sizes in pixels, seconds or Hz)."""

    n_classes: int = 20
    image_size: int = 48
    distractors: tuple[int, int] = (1, 2)
    object_width: tuple[float, float] = (0.30, 0.42)
    object_height: tuple[float, float] = (0.80, 1.00)
    max_overlap: float = 0.30
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    n_mels: int = 64
    f0_range: tuple[float, float] = (150.0, 1500.0)
    pitch_jitter: float = 0.02
    snr_db: tuple[float, float] = (5.0, 20.0)
    gain: tuple[float, float] = (0.3, 1.0)
    n_scenes: int = 0  #: recording scenes shared by image and audio, independent of the class (0 = none)
    scene_tint: float = 40.0  #: background colour cast of a scene (per-channel amplitude, 0-255 scale)
    scene_level_db: float = -6.0  #: power of a scene's ambience relative to the source tone

    def __post_init__(self):
        limit = len(SHAPES) * len(PALETTE)
        if not 2 <= self.n_classes <= limit:
            raise ValueError(f"n_classes must be between 2 and {limit}, got {self.n_classes}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}")
        lo, hi = self.distractors
        if not 0 <= lo <= hi or hi + 1 > self.n_classes - 0 or (hi + 1) * self.object_width[0] * (1 - self.max_overlap) > 1:
            raise ValueError(f"distractors={self.distractors} do not fit the image or the number of classes")

    @property
    def n_colours(self) -> int:
        """Classes are colour x shape; colours vary fastest (20 classes: 5 colours x 4 shapes)."""
        return min(len(PALETTE), math.ceil(math.sqrt(self.n_classes)))

    def class_shape(self, c: int) -> str:
        return SHAPES[c // self.n_colours]

    def class_colour(self, c: int) -> np.ndarray:
        return PALETTE[c % self.n_colours]

    def class_name(self, c: int) -> str:
        colours = ("red", "blue", "green", "yellow", "purple", "orange", "cyan", "pink")
        return f"{colours[c % self.n_colours]} {self.class_shape(c)}"

    def scene_tint_rgb(self, scene: int) -> np.ndarray:
        """The background colour cast of ``scene`` (a fixed direction in RGB, ``scene_tint`` long)."""
        dirs = np.random.default_rng(4321).normal(size=(max(self.n_scenes, 1), 3))
        return (dirs[scene] / np.linalg.norm(dirs[scene]) * self.scene_tint).astype(np.float32)

    def scene_frequency(self, scene: int) -> float:
        """Centre frequency (Hz) of ``scene``'s ambience band, log-spaced over 2.5-7 kHz in a fixed order."""
        order = np.random.default_rng(8765).permutation(max(self.n_scenes, 1))
        return float(2500.0 * (7000.0 / 2500.0) ** (order[scene] / max(self.n_scenes - 1, 1)))

    def class_sound(self, c: int) -> tuple[float, int, float]:
        """(fundamental Hz, number of harmonics, amplitude-modulation rate Hz) of class ``c``."""
        # Pitches are log-spaced but assigned in a fixed shuffled order, so that classes that look
        # alike (same shape or colour) do not also sound alike.
        order = np.random.default_rng(1234).permutation(self.n_classes)
        lo, hi = self.f0_range
        f0 = lo * (hi / lo) ** (order[c] / max(self.n_classes - 1, 1))
        harmonics = 2 + c % 5
        am_rate = (0.0, 3.0, 7.0, 13.0)[c % 4]
        return float(f0), harmonics, am_rate


def _place_boxes(rng: np.random.Generator, spec: BuiltinSpec, count: int) -> list[tuple[float, float, float, float]]:
    """``count`` normalised boxes (x0, y0, x1, y1) side by side, in random order, with neighbours overlapping by
    at most ``max_overlap`` of the narrower width and the leftover width spread over random gaps."""
    for _ in range(100):
        widths = rng.uniform(*spec.object_width, size=count)
        overlaps = rng.uniform(0, spec.max_overlap, size=count - 1) * np.minimum(widths[:-1], widths[1:])
        free = 1.0 - widths.sum() + overlaps.sum()
        if free >= 0:
            break
    else:
        raise RuntimeError("could not place the objects; reduce distractors or object_width")
    gaps = rng.dirichlet(np.ones(count + 1)) * free
    x0 = gaps[0] + np.concatenate([[0.0], np.cumsum(widths[:-1] - overlaps + gaps[1:-1])])
    heights = rng.uniform(*spec.object_height, size=count)
    y0 = rng.uniform(0, 1 - heights)
    order = rng.permutation(count)  # which slot holds the sounding object (index 0) is random
    return [(x0[j], y0[j], x0[j] + widths[j], y0[j] + heights[j]) for j in order]


def _render_image(rng: np.random.Generator, spec: BuiltinSpec, classes: list[int], boxes, scene: int) -> np.ndarray:
    """One uint8 image ``[3, S, S]``: clutter, then the objects (first one is the sounding object)."""
    s = spec.image_size
    # Background: grey (tinted by the scene) with low-frequency colour noise, thin lines and pixel noise.
    coarse = rng.normal(0.0, 25.0, size=(3, 4, 4)).astype(np.float32)
    low = F.interpolate(torch.from_numpy(coarse)[None], size=(s, s), mode="bicubic", align_corners=False)[0].numpy()
    img = 128.0 + low
    if scene >= 0:
        img += spec.scene_tint_rgb(scene)[:, None, None]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    for _ in range(rng.integers(2, 5)):
        a, b = rng.uniform(-1, 1, size=2)
        c = rng.uniform(0, s)
        line = np.abs(a * (xx - s / 2) + b * (yy - s / 2) + c - s / 2) / math.hypot(a, b) < 0.7
        img[:, line] = rng.uniform(60, 200)
    # Draw distractors first and the sounding object last, so neither is systematically on top.
    order = list(range(1, len(classes))) + [0]
    rng.shuffle(order)
    for k in order:
        c = classes[k]
        x0, y0, x1, y1 = (v * s for v in boxes[k])
        u = (xx + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2)
        v = (yy + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)
        inside = (np.abs(u) <= 1) & (np.abs(v) <= 1) & _shape_mask(spec.class_shape(c), u, v)
        colour = spec.class_colour(c) * rng.uniform(0.85, 1.1) + rng.normal(0, 12, size=3)
        shade = 1.0 - 0.25 * (v + 1) / 2 * rng.uniform(0, 1)
        for ch in range(3):
            img[ch][inside] = (colour[ch] * shade)[inside]
    img += rng.normal(0, 6.0, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _synthesise_audio(rng: np.random.Generator, spec: BuiltinSpec, classes: np.ndarray,
                      scenes: np.ndarray, silent: np.ndarray | None = None) -> torch.Tensor:
    """Waveforms ``[N, T]``: each sample's class tone with jitter, onset/offset, gain, white noise and,
    with scenes, the scene's ambience (noise in a 300 Hz band around the scene frequency). Where ``silent`` is
    True the tone is drawn (the same random draws) but left out: the clip is its noise alone, at the level the
    tone would have set."""
    n = len(classes)
    t = torch.arange(int(spec.sample_rate * spec.clip_seconds), dtype=torch.float64) / spec.sample_rate
    freqs = torch.fft.rfftfreq(t.numel(), 1.0 / spec.sample_rate)
    waves = torch.empty(n, t.numel(), dtype=torch.float64)
    for i, c in enumerate(classes):
        f0, harmonics, am_rate = spec.class_sound(int(c))
        f0 *= 1.0 + rng.uniform(-spec.pitch_jitter, spec.pitch_jitter)
        ks = torch.arange(1, harmonics + 1, dtype=torch.float64)
        amps = torch.as_tensor(rng.uniform(0.4, 1.0, size=harmonics)) / ks
        phases = torch.as_tensor(rng.uniform(0, 2 * math.pi, size=harmonics))
        tone = (amps[:, None] * torch.sin(2 * math.pi * f0 * ks[:, None] * t + phases[:, None])).sum(0)
        if am_rate > 0:
            tone = tone * (0.6 + 0.4 * torch.sin(2 * math.pi * am_rate * t + rng.uniform(0, 2 * math.pi)))
        onset = rng.uniform(0.0, 0.3 * spec.clip_seconds)
        offset = rng.uniform(0.7 * spec.clip_seconds, spec.clip_seconds)
        ramp = 0.01
        env = ((t - onset) / ramp).clamp(0, 1) * ((offset - t) / ramp).clamp(0, 1)
        tone = tone * env
        tone = tone / tone.abs().max().clamp_min(1e-8) * rng.uniform(*spec.gain)
        power = tone[env > 0].square().mean()
        snr = 10 ** (rng.uniform(*spec.snr_db) / 10)
        noise = torch.as_tensor(rng.standard_normal(t.numel())) * torch.sqrt(power / snr)
        waves[i] = noise if silent is not None and silent[i] else tone + noise
        if scenes[i] >= 0:
            band = (freqs - spec.scene_frequency(int(scenes[i]))).abs() < 150
            ambience = torch.fft.irfft(torch.fft.rfft(torch.as_tensor(rng.standard_normal(t.numel()))) * band, t.numel())
            level = power * 10 ** (spec.scene_level_db / 10)
            waves[i] += ambience * torch.sqrt(level / ambience.square().mean())
    return waves.clamp(-1, 1).to(torch.float32)


@lru_cache(maxsize=4)
def _mel_transform(sample_rate: int, n_mels: int) -> torch.nn.Module:
    return T.MelSpectrogram(sample_rate=sample_rate, n_fft=512, hop_length=160, n_mels=n_mels)


#: Fixed standardisation of the built-in log-mel spectrograms (measured over generated clips).
_LOGMEL_MEAN, _LOGMEL_STD = 0.9, 2.0


def builtin_spectrogram(waves: torch.Tensor, spec: BuiltinSpec) -> torch.Tensor:
    """Standardised log-mel ``[N, 1, n_mels, frames / 2]`` (n_fft 512, hop 160, pooled 2x in time)."""
    mel = _mel_transform(spec.sample_rate, spec.n_mels)(waves)
    logmel = (torch.log(mel + 1e-6) - _LOGMEL_MEAN) / _LOGMEL_STD
    return F.avg_pool1d(logmel, kernel_size=2, stride=2).unsqueeze(1)


def split_classes(n_classes: int, n_unheard: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """A fixed heard / unheard class split (sorted lists) for open-set experiments."""
    if not 0 <= n_unheard < n_classes:
        raise ValueError(f"n_unheard must be in [0, {n_classes}), got {n_unheard}")
    perm = np.random.default_rng(seed).permutation(n_classes)
    return sorted(perm[n_unheard:].tolist()), sorted(perm[:n_unheard].tolist())


class BuiltinAVDataset(torch.utils.data.Dataset):
    """One split of the built-in dataset, generated in memory.

    Items are dicts with ``image`` (uint8 ``[3, S, S]``), ``spec`` (``[1, n_mels, frames]``), ``box``
    (normalised ``[x0, y0, x1, y1]`` of the sounding object), ``label`` (its class), ``id``, and the
    distractors' boxes and labels (``distractor_boxes`` ``[K, 4]`` and ``distractor_labels`` ``[K]``,
    padded with -1).
    """

    def __init__(self, split: str, n_samples: int, *, seed: int = 0, spec: BuiltinSpec = BuiltinSpec(),
                 classes: tuple[int, ...] | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be positive, got {n_samples}")
        self.split, self.spec, self.seed = split, spec, seed
        self.classes = tuple(range(spec.n_classes)) if classes is None else tuple(sorted(classes))
        if not self.classes or any(not 0 <= c < spec.n_classes for c in self.classes):
            raise ValueError(f"classes must be a non-empty subset of 0..{spec.n_classes - 1}")
        data = _generate(split, n_samples, seed, spec, self.classes)
        (self.images, self.specs, self.boxes, self.labels, self.distractor_boxes, self.distractor_labels,
         self.scenes) = data
        self.ids = [f"{split}-{seed}-{i:05d}" for i in range(n_samples)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return self.batch([i], squeeze=True)

    def batch(self, indices, squeeze: bool = False) -> dict:
        """The items at ``indices`` stacked into one batch dict (a fast path for in-memory data)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        out = {
            "image": self.images[idx],
            "spec": self.specs[idx],
            "box": self.boxes[idx],
            "label": self.labels[idx],
            "distractor_boxes": self.distractor_boxes[idx],
            "distractor_labels": self.distractor_labels[idx],
            "gt_boxes": vggss_boxes_to_pixels(self.boxes[idx])[:, None],  # [B, 1, 4] pixels at 224
            "scene": self.scenes[idx],
            "id": [self.ids[i] for i in idx.tolist()],
        }
        if squeeze:
            out = {k: v[0] for k, v in out.items()}
        return out

    def class_name(self, c: int) -> str:
        return self.spec.class_name(c)

    def gt_maps(self, indices, size: int = 224) -> torch.Tensor:
        """Binary ground-truth maps ``[B, size, size]`` of the sounding objects (VGG-SS conventions)."""
        boxes = vggss_boxes_to_pixels(self.boxes[torch.as_tensor(indices, dtype=torch.long)], size)
        return gt_maps_from_boxes(boxes[:, None], size, mode="vggss")


@lru_cache(maxsize=8)
def _generate(split: str, n: int, seed: int, spec: BuiltinSpec, classes: tuple[int, ...]):
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], spec.n_classes]))
    labels = rng.choice(np.array(classes), size=n)
    scenes = rng.integers(spec.n_scenes, size=n) if spec.n_scenes else np.full(n, -1)
    max_k = spec.distractors[1]
    images = np.empty((n, 3, spec.image_size, spec.image_size), dtype=np.uint8)
    boxes = np.empty((n, 4), dtype=np.float32)
    dboxes = np.full((n, max_k, 4), -1.0, dtype=np.float32)
    dlabels = np.full((n, max_k), -1, dtype=np.int64)
    for i, c in enumerate(labels):
        k = int(rng.integers(spec.distractors[0], spec.distractors[1] + 1))
        others = [x for x in range(spec.n_classes) if x != c]
        distract = rng.choice(others, size=k, replace=False).tolist()
        bxs = _place_boxes(rng, spec, k + 1)
        images[i] = _render_image(rng, spec, [int(c)] + distract, bxs, int(scenes[i]))
        boxes[i] = bxs[0]
        dboxes[i, :k] = bxs[1:]
        dlabels[i, :k] = distract
    waves = _synthesise_audio(rng, spec, labels, scenes)
    with torch.no_grad():
        specs = builtin_spectrogram(waves, spec)
    return (torch.from_numpy(images), specs.contiguous(), torch.from_numpy(boxes), torch.from_numpy(labels).long(),
            torch.from_numpy(dboxes), torch.from_numpy(dlabels), torch.from_numpy(scenes).long())


@lru_cache(maxsize=4)
def object_images(split: str, n: int, *, seed: int = 0, spec: BuiltinSpec = BuiltinSpec(n_classes=64)
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-object images for supervised pretraining: uint8 ``[n, 3, S, S]`` and class ids ``[n]``.

    Each image holds one object of a class drawn uniformly from ``spec.n_classes`` (64: every shape-colour pair
    the generator knows, a superset of the audio-visual classes), placed, drawn and cluttered as in the
    audio-visual frames, without distractors. ``split`` (``"train"`` or ``"val"``) picks a random stream of its
    own, so that neither the images nor their backgrounds occur in any audio-visual split, whatever the seeds.
    """
    if split not in OBJECT_SPLITS:
        raise ValueError(f"split must be one of {tuple(OBJECT_SPLITS)}, got {split!r}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, OBJECT_SPLITS[split], spec.n_classes]))
    labels = rng.integers(spec.n_classes, size=n)
    images = np.empty((n, 3, spec.image_size, spec.image_size), dtype=np.uint8)
    single = with_changes(spec, distractors=(0, 0))
    for i, c in enumerate(labels):
        images[i] = _render_image(rng, single, [int(c)], _place_boxes(rng, single, 1), -1)
    return torch.from_numpy(images), torch.from_numpy(labels).long()


def builtin_splits(*, n_train: int = 3000, n_val: int = 500, n_test: int = 500, seed: int = 0,
                   spec: BuiltinSpec = BuiltinSpec(), n_unheard: int = 0) -> dict[str, BuiltinAVDataset]:
    """Train / val / test splits; with ``n_unheard > 0`` the training and validation splits hold only the
    heard classes, and ``test_heard`` / ``test_unheard`` splits are added."""
    heard, unheard = split_classes(spec.n_classes, n_unheard)
    out = {
        "train": BuiltinAVDataset("train", n_train, seed=seed, spec=spec, classes=tuple(heard)),
        "val": BuiltinAVDataset("val", n_val, seed=seed, spec=spec, classes=tuple(heard)),
        "test": BuiltinAVDataset("test", n_test, seed=seed, spec=spec, classes=tuple(heard)),
    }
    if n_unheard:
        out["test_heard"] = out["test"]
        out["test_unheard"] = BuiltinAVDataset("test", n_test, seed=seed + 7919, spec=spec, classes=tuple(unheard))
    return out


def with_changes(spec: BuiltinSpec, **changes) -> BuiltinSpec:
    """A copy of ``spec`` with fields replaced (validated)."""
    return dataclasses.replace(spec, **changes)
