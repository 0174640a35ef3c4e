"""Negatives of the extended protocol on the built-in data: clips in which no visible object sounds.

The extended Flickr-SoundNet and VGG-SS test sets (SLAVC, Mo and Morgado, NeurIPS 2022) add to the annotated
clips silent ones and ones whose sound source is off screen; a model should then be unsure that anything in the
frame sounds (:func:`fnac_lab.metrics.map_confidence`). The built-in analogue, in equal parts (silent first, then
alternating):

- ``silent``: a frame like a test frame (two or three objects) with a clip of noise only: the white noise a test clip
  carries, at the level its tone would have set, and no tone;
- ``off_screen``: a frame like a test frame with the tone of a class none of its objects belongs to.

Negatives come from a random stream of their own (:data:`NEGATIVES_STREAM`), apart from every split's, so adding them
leaves every other split bit-identical. Every object of a negative frame is silent: its boxes are the
``distractor_boxes``; there is no sounding object and no ground truth.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .builtin import BuiltinSpec, _place_boxes, _render_image, _synthesise_audio, builtin_spectrogram

#: What a negative holds, in the order they alternate.
NEGATIVE_KINDS = ("silent", "off_screen")
#: Random stream of the negatives (the splits use 0-2 and the pretraining images 3-4).
NEGATIVES_STREAM = 5


def negatives_count(share: float, n_test: int) -> int:
    """How many negatives ``share`` (negatives per test positive, ``test_negatives``) asks for: ``round(share * n_test)``."""
    if not share >= 0:
        raise ValueError(f"the share of negatives must be non-negative, got {share!r}")
    return int(round(share * n_test))


@lru_cache(maxsize=4)
def _generate_negatives(n: int, seed: int, spec: BuiltinSpec, classes: tuple[int, ...]):
    rng = np.random.default_rng(np.random.SeedSequence([seed, NEGATIVES_STREAM, spec.n_classes]))
    kinds = np.arange(n) % len(NEGATIVE_KINDS)
    audio_classes = rng.choice(np.array(classes), size=n)
    scenes = rng.integers(spec.n_scenes, size=n) if spec.n_scenes else np.full(n, -1)
    max_objects = spec.distractors[1] + 1
    images = np.empty((n, 3, spec.image_size, spec.image_size), dtype=np.uint8)
    boxes = np.full((n, max_objects, 4), -1.0, dtype=np.float32)
    objects = np.full((n, max_objects), -1, dtype=np.int64)
    for i, c in enumerate(audio_classes):
        others = [x for x in range(spec.n_classes) if x != c]  # a class never seen in its own frame
        k = min(int(rng.integers(spec.distractors[0], spec.distractors[1] + 1)) + 1, len(others))
        drawn = rng.choice(others, size=k, replace=False).tolist()
        placed = _place_boxes(rng, spec, k)
        images[i] = _render_image(rng, spec, drawn, placed, int(scenes[i]))
        boxes[i, :k] = placed
        objects[i, :k] = drawn
    waves = _synthesise_audio(rng, spec, audio_classes, scenes, silent=kinds == 0)
    with torch.no_grad():
        specs = builtin_spectrogram(waves, spec)
    labels = np.where(kinds == 0, -1, audio_classes)
    return (torch.from_numpy(images), specs.contiguous(), torch.from_numpy(labels).long(), kinds,
            torch.from_numpy(boxes), torch.from_numpy(objects), torch.from_numpy(scenes).long())


class BuiltinNegatives(torch.utils.data.Dataset):
    """The negatives of a built-in test split, generated in memory (see the module docstring).

    Items: ``image`` (uint8 ``[3, S, S]``), ``spec``, ``label`` (the class of the off-screen sound, -1 for a silent
    clip), ``kind`` (:data:`NEGATIVE_KINDS`), ``distractor_boxes`` / ``distractor_labels`` (every object in the
    frame, padded with -1), ``scene`` and ``id``. No ``box`` and no ground truth: nothing visible sounds.
    """

    #: evaluation reads this: the clips are scored by their confidence alone, never by cIoU
    negatives = True

    def __init__(self, n_samples: int, *, seed: int = 0, spec: BuiltinSpec = BuiltinSpec(),
                 classes: tuple[int, ...] | None = None):
        if n_samples < 1:
            raise ValueError(f"n_samples must be positive, got {n_samples}")
        self.spec, self.seed = spec, seed
        self.classes = tuple(range(spec.n_classes)) if classes is None else tuple(sorted(classes))
        (self.images, self.specs, self.labels, kinds, self.distractor_boxes, self.distractor_labels,
         self.scenes) = _generate_negatives(n_samples, seed, spec, self.classes)
        self.kinds = [NEGATIVE_KINDS[k] for k in kinds]
        self.ids = [f"negative-{seed}-{i:05d}" for i in range(n_samples)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return self.batch([i], squeeze=True)

    def batch(self, indices, squeeze: bool = False) -> dict:
        """The items at ``indices`` stacked into one batch dict."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        out = {"image": self.images[idx], "spec": self.specs[idx], "label": self.labels[idx],
               "distractor_boxes": self.distractor_boxes[idx], "distractor_labels": self.distractor_labels[idx],
               "scene": self.scenes[idx], "kind": [self.kinds[i] for i in idx.tolist()],
               "id": [self.ids[i] for i in idx.tolist()]}
        if squeeze:
            out = {k: v[0] for k, v in out.items()}
        return out

    def describe(self, i: int) -> str:
        """``silent`` or ``off screen: <class>`` (the class whose sound the clip holds)."""
        if self.kinds[i] == "silent":
            return "silent"
        return f"off screen: {self.spec.class_name(int(self.labels[i]))}"
