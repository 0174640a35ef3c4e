"""The training configuration: the common fields of a run, its ``method`` and that method's options. The defaults
are the published FNAC setting.

A setting is named by its field (``lr``) or, for a method's option, as ``method.option`` (``fnac.w_tne``); either
can be set from the command line (``--set fnac.w_tne=0``), a notebook parameter, a grid or Python
(``preset("demo", **{"fnac.w_tne": 0})``, ``cfg.replace(method="nce")``). Values are checked on construction and an
unknown or invalid setting is refused with a message that names it.

Records written before methods had options of their own name FNAC's options flat (``w_tne``): they are read through
the one mapping of :mod:`fnac_lab.methods.settings`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from .audio import SPEC_AUGMENT_DRAWS
from .data.catalogue import STAMPS_LAYOUT, TESTSETS, TRAINSETS
from .coercion import ConfigError, base_type, check_backbone, coerce
from .methods import METHODS, Method, MethodOptions, build_method, method_class
from .methods.settings import FLAT_OPTION_KEYS, dotted
from .utils import FnacError, stamps_benchmark_root

BUILTIN = "builtin"
#: The kinds of torch device a ``device`` setting may name (besides ``auto``).
DEVICE_KINDS = ("cpu", "cuda", "mps")


class _Settings:
    """Construction helpers shared by the configuration dataclasses: checked field names and coerced values."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            if f.name != "options":
                object.__setattr__(self, f.name, coerce(f.name, getattr(self, f.name), hints[f.name]))
        self._resolve()
        self._validate()

    def _resolve(self) -> None:
        """Fields built from others (none by default)."""

    def _validate(self) -> None:
        raise NotImplementedError

    def need(self, ok: bool, name: str, rule: str) -> None:
        """Refuse the value of ``name`` in one line naming it, unless ``ok``."""
        if not ok:
            raise ConfigError(f"{name}={getattr(self, name)!r}: {rule}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied; unknown names are refused."""
        check_keys(changes, type(self))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def settings(self) -> dict[str, Any]:
        """Every setting by name (the record, :meth:`to_dict`, unless a subclass nests settings there)."""
        return self.to_dict()

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        check_keys(values, cls)
        return cls(**values)

    def check_resumable(self, record: dict[str, Any], *, source: Path, runtime: frozenset[str] = frozenset()
                        ) -> None:
        """Refuse, in one line naming ``source``, to continue a run recorded with the configuration ``record``
        under this one: a setting this version does not know, or a changed setting other than the ``runtime`` ones
        (which may change between a run and its continuation)."""
        try:
            saved = type(self).from_dict(dict(record)).settings()
        except ConfigError as exc:
            raise FnacError(f"{source}: its configuration has an {exc}, written by another version of fnac-lab; "
                              f"use another --out, or --no-resume to start afresh") from None
        current = self.settings()
        changed = sorted(k for k in {*saved, *current} if k not in runtime and saved.get(k) != current.get(k))
        if changed:
            raise FnacError(f"{source}: written with a different configuration ({', '.join(changed)}); use another "
                            f"--out, or --no-resume to start afresh")


@dataclass(frozen=True)
class TrainConfig(_Settings):
    """All hyper-parameters of a run. Defaults reproduce the published configuration (Sun et al., CVPR 2023)."""

    # Model
    visual_backbone: str = "resnet18.tv_in1k"  #: timm name; the tag picks torchvision's ImageNet weights (published)
    visual_stage: int = 4  #: timm feature stage of the visual map (4 = last ResNet stage, 7 x 7 at 224 px)
    audio_backbone: str = "resnet18"  #: timm name of the audio stream, one input channel, trained from scratch
    audio_stage: int = 4  #: timm feature stage the audio stream is max-pooled from
    embed_dim: int = 512  #: D, the size of both streams' embeddings (1x1 conv and linear projections)
    visual_dropout: float = 0.9  #: dropout on the visual feature map before its projection (published 0.9)
    audio_dropout: float = 0.0  #: dropout on the pooled audio features before their projection (published 0)
    visual_pretrained: bool = True  #: ImageNet weights through timm (needs a network, or visual_weights)
    visual_weights: Optional[str] = None  #: local file with pretrained visual weights
    visual_pretrain: Optional[str] = None  #: built-in pretraining preset (smoke, demo) of the visual stream, cached
    centre_norm: bool = False  #: deviation: parameter-free batch norm on each projection before L2

    # Objective
    tau: float = 0.03  #: temperature of the cross-modal similarities (the model's, every method's)
    method: str = "fnac"  #: the training method (fnac_lab.methods.METHODS): fnac (published), nce (EZ-VSL)
    options: Any = None  #: that method's options (a mapping, or its options class; None: its defaults)

    # Optimisation
    lr: float = 1e-4  #: Adam learning rate, constant (published)
    weight_decay: float = 1e-4  #: Adam weight decay (L2 added to the gradients, published)
    batch_size: int = 128  #: clips per batch (the global batch under DDP); every other clip is a negative
    epochs: int = 20  #: training epochs; each ends with a validation that may keep best.pt
    seed: int = 0  #: initialisation, batch order and augmentation draws (twins share it)

    # Data
    dataset: str = BUILTIN  #: builtin (procedural, generated here) or real (a benchmark on disk)
    n_classes: int = 20  #: built-in data: number of sound-source classes
    n_unheard: int = 0  #: built-in data: classes held out of training (heard / unheard test splits)
    n_scenes: int = 0  #: built-in data: recording scenes tinting the background and adding ambience (0 = none)
    n_train: int = 3000  #: built-in data: training clips
    n_val: int = 500  #: built-in data: validation clips (model selection)
    n_test: int = 500  #: built-in data: test clips (reported)
    image_size: int = 224  #: visual input size (the built-in data is rendered at this size)
    data_seed: int = 0  #: the built-in data's generation and a real test set's validation split
    class_bias_p: float = 0.0  #: probability of a class-biased batch slot (pilot experiment); 0 = plain shuffling
    audio_augment: str = "per_axis"  #: SpecAugment masks: per_axis, published (starts drawn as published) or off
    test_negatives: float = 0.0  #: built-in data: silent and off-screen test clips per test clip (extended protocol)

    # Real data (dataset="real")
    train_root: Optional[str] = None  #: layout of the training clips: ROOT/frames + ROOT/audio, or both flat
    trainset: str = "vggss_144k"  #: named training subset (fnac_lab.data.catalogue.TRAINSETS)
    train_ids: Optional[str] = None  #: id list of the subset; default ROOT/<trainset>.txt
    train_labels: Optional[str] = None  #: id,class csv (or vggsound.csv): FN ratio and class-biased sampling
    cache_dir: Optional[str] = None  #: a cache of the training clips (`fnac-lab cache`); replaces train_root
    testset: str = "vggss"  #: annotated set, split into validation and reported test (fnac_lab.data.catalogue.TESTSETS)
    test_root: Optional[str] = None  #: layout of the test clips
    test_annotations: Optional[str] = None  #: Flickr XML directory, vggss.json, or AVSBench mask directory
    test_split_csv: Optional[str] = None  #: test ids (first column); default: every annotated id
    val_fraction: float = 0.5  #: seeded share of the test ids used for model selection, never reported as test
    val_split_csv: Optional[str] = None  #: validation ids of test_root apart from the test ids (replaces val_fraction)
    audio_rate: Optional[int] = None  #: deviation: resample audio to this rate (None = native rate, published)

    # Runtime
    device: str = "auto"  #: auto (CUDA when present, else CPU), cpu, cuda or cuda:N
    amp: bool = True  #: bfloat16 autocast on CUDA (ignored on CPU)
    channels_last: bool = False  #: channels-last memory format for model and image batches (faster convs on GPUs)
    compile: bool = False  #: torch.compile the training forward (off: 13 % slower than eager on an H200)
    global_negatives: bool = True  #: under DDP every loss term sees the global batch (gathered over ranks)
    sync_batchnorm: bool = False  #: under DDP, batch-norm statistics over the global batch (CUDA only)
    eval_batch_size: int = 64  #: clips per batch when scoring validation and test
    num_workers: int = 0  #: DataLoader processes for real data (0: in the main process)
    persistent_workers: bool = False  #: keep DataLoader workers between epochs (resume then not bit-exact)
    select_metric: str = "ap50"  #: validation metric used to keep best.pt
    tensorboard: bool = True  #: TensorBoard event files of every epoch in OUT/tensorboard/ (fnac_lab.tensorboard_events)

    def _validate(self) -> None:
        _validate(self)

    def _resolve(self) -> None:
        cls = method_class(self.method)
        options = self.options
        if isinstance(options, MethodOptions) and not isinstance(options, cls.options_class):
            raise ConfigError(f"options: {type(options).__name__} are not the options of method {self.method!r}")
        if not isinstance(options, MethodOptions):
            if options is not None and not isinstance(options, dict):
                raise ConfigError(f"options: a mapping of {self.method}'s options expected, got {options!r}")
            options = cls.options_class.from_values(options or {})
        object.__setattr__(self, "options", options)

    def build_method(self) -> Method:
        """The method this configuration trains, with its options, at ``tau``."""
        return build_method(self.method, self.options, tau=self.tau)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied: fields, ``method.option`` names, or the flat names of
        :data:`FLAT_OPTION_KEYS`. A new ``method`` starts from its own defaults."""
        return _build(self.settings(), changes)

    def settings(self) -> dict[str, Any]:
        """Every setting by name: the common fields, ``method`` and ``method.option`` for each option."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        out.update({f"{self.method}.{k}": v for k, v in self.options.to_dict().items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The record of the run (``config.json``, checkpoints): the common fields, ``method``, and the options under
        the method's name. Fields of :data:`RECORDED_WHEN_SET` are left out while at their default, so the records
        of runs that do not use a later setting stay as they were."""
        out = {}
        for f in fields(self):
            if f.name != "options":
                out[f.name] = getattr(self, f.name)
            if f.name == "method":
                out[self.method] = self.options.to_dict()
        for name in RECORDED_WHEN_SET:
            if out[name] == getattr(TrainConfig, name):
                del out[name]
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A configuration from its record (:meth:`to_dict`, or a record of an earlier version with flat keys)."""
        return _build({}, values)


#: Settings added after runs had been recorded, written into a run's configuration only when set.
RECORDED_WHEN_SET = ("test_negatives", "tensorboard")


def _build(base: dict[str, Any], changes: dict[str, Any]) -> "TrainConfig":
    """``base`` settings (dotted) with ``changes`` applied. The method is ``changes``' or else ``base``'s (default
    fnac); ``base``'s options of another method are dropped, ``changes``' are refused in one line."""
    changes = dotted(changes)
    check_keys(changes)
    method = str(changes.get("method", base.get("method", TrainConfig.method)))
    method_class(method)
    for key in changes:
        owner = key.partition(".")[0]
        if "." in key and owner != method:
            raise ConfigError(f"{key}: an option of method {owner!r}, and this run's method is {method!r}")
    merged = {k: v for k, v in {**base, **changes}.items() if "." not in k or k.partition(".")[0] == method}
    merged["method"] = method
    options = {k.partition(".")[2]: merged.pop(k) for k in [k for k in merged if "." in k]}
    return TrainConfig(**merged, options=options)


def check_keys(values: dict[str, Any], cls: type = None) -> None:
    """Refuse names that are not settings of ``cls`` (default :class:`TrainConfig`: its fields, ``method.option`` of a
    registered method, the flat names of :data:`FLAT_OPTION_KEYS`, a method's options under its name), suggesting the
    closest."""
    names = list(setting_types(cls))
    for key in values:
        if key in names or ((cls or TrainConfig) is TrainConfig and key in METHODS):
            continue
        owner, dot, option = key.partition(".")
        if dot and owner in METHODS:
            METHODS[owner].options_class.from_values({option: None})  # refuses the unknown option, suggesting one
        near = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown setting {key!r}{hint}")


def setting_types(cls: type = None) -> dict[str, tuple[type, bool]]:
    """Each setting of ``cls`` (default :class:`TrainConfig`): its type (int, float, bool or str) and whether it may
    be None. For :class:`TrainConfig`: the common fields, ``method.option`` of every registered method, and the flat
    names of :data:`FLAT_OPTION_KEYS`."""
    cls = cls or TrainConfig
    hints = typing.get_type_hints(cls)
    out = {f.name: base_type(hints[f.name]) for f in fields(cls) if f.name != "options"}
    if cls is TrainConfig:
        for name, method in METHODS.items():
            option_hints = typing.get_type_hints(method.options_class)
            out.update({f"{name}.{o}": base_type(option_hints[o]) for o in method.options_class.names()})
        out.update({flat: out[key] for flat, key in FLAT_OPTION_KEYS.items()})
    return out


def coerce_setting(name: str, value: Any, cls: type = None) -> Any:
    """``value`` converted to the type of the setting ``name`` of ``cls`` (default :class:`TrainConfig`) as a
    configuration converts it on construction (``"1"`` to 1, ``"soft"`` to None, ...), or :class:`ConfigError`."""
    tp, optional = setting_types(cls)[name]
    return coerce(name, value, Optional[tp] if optional else tp)


def _validate(c: TrainConfig) -> None:
    need = c.need
    for name in ("visual_dropout", "audio_dropout"):
        need(0.0 <= getattr(c, name) < 1.0, name, "must be a probability below 1")
    need(0.0 <= c.class_bias_p <= 1.0, "class_bias_p", "must be a probability")
    for name in ("embed_dim", "batch_size", "epochs", "n_train", "n_val", "n_test", "eval_batch_size", "image_size"):
        need(getattr(c, name) >= 1, name, "must be a positive integer")
    for name in ("visual_stage", "audio_stage"):
        need(0 <= getattr(c, name) <= 4, name, "must be a timm feature stage between 0 and 4")
    need(math.isfinite(c.weight_decay) and c.weight_decay >= 0, "weight_decay", "must be a non-negative finite number")
    need(math.isfinite(c.tau) and c.tau > 0, "tau", "must be a positive finite number")
    need(math.isfinite(c.lr) and c.lr > 0, "lr", "must be a positive finite number")
    method = c.build_method()
    if c.dataset != BUILTIN:
        for name in method.labelled_options():
            raise ConfigError(f"{c.method}.{name}={getattr(c.options, name)!r}: is a diagnostic that reads every "
                              f"clip's class label: only the built-in data has them")
        if method.reads_labels:
            raise ConfigError(f"method={c.method!r}: is a diagnostic that reads every clip's class label: only the "
                              f"built-in data has them")
    need(c.batch_size >= 2, "batch_size", "must be at least 2 for contrastive learning")
    need(c.num_workers >= 0, "num_workers", "must be non-negative")
    need(c.device == "auto" or c.device.split(":")[0] in DEVICE_KINDS, "device", "must be auto, cpu, cuda[:N] or mps")
    need(c.select_metric in ("ap50", "mean_ciou", "auc"), "select_metric", "must be ap50, mean_ciou or auc")
    need(c.dataset in DATASETS, "dataset", f"must be one of {', '.join(DATASETS)}")
    need(c.audio_augment in AUDIO_AUGMENT, "audio_augment", f"must be one of {', '.join(AUDIO_AUGMENT)}")
    need(c.visual_pretrain is None or c.visual_pretrain in PRETRAIN_PRESETS, "visual_pretrain",
         f"must be one of {', '.join(PRETRAIN_PRESETS)}, or none")
    need(c.visual_pretrain is None or c.visual_weights is None, "visual_pretrain",
         "and visual_weights both name the visual weights; set one of them")
    if c.dataset == BUILTIN:
        need(2 <= c.n_classes <= 64, "n_classes", "must be between 2 and 64 for the built-in data")
        need(0 <= c.n_unheard < c.n_classes - 1, "n_unheard", "must leave at least two heard classes")
        need(c.n_scenes >= 0, "n_scenes", "must be non-negative")
        need(math.isfinite(c.test_negatives) and 0 <= c.test_negatives <= 10, "test_negatives",
             "must be a share of the test split between 0 and 10")
        need(c.image_size >= 16, "image_size", "must be at least 16 px")
        need(c.batch_size <= c.n_train, "batch_size", f"exceeds n_train={c.n_train}")
    if c.dataset == REAL:
        need(c.trainset in TRAINSETS, "trainset", f"must be one of {', '.join(TRAINSETS)}")
        need(c.testset in TESTSETS, "testset", f"must be one of {', '.join(TESTSETS)}")
        need(0.0 < c.val_fraction < 1.0, "val_fraction", "must leave both a validation and a test part")
        need(c.audio_rate is None or c.audio_rate >= 1000, "audio_rate", "must be at least 1000 Hz, or none")
        need(c.class_bias_p == 0 or c.train_labels is not None, "class_bias_p", "needs train_labels on real data")
        need(c.val_split_csv is None or c.test_split_csv is not None, "val_split_csv",
             "needs test_split_csv: without it every annotated id is a test id, these too")
        need(c.test_negatives == 0, "test_negatives", "is for the built-in data; real sets with negatives are "
             "scored with fnac-lab evaluate --testset flickr_extended or vggss_extended")
    check_backbone("visual_backbone", c.visual_backbone)
    check_backbone("audio_backbone", c.audio_backbone)


REAL = "real"
#: SpecAugment draws (fnac_lab.audio.spec_augment): each mask's start from its own axis, as published, or off.
AUDIO_AUGMENT = (*SPEC_AUGMENT_DRAWS, "off")
#: Training sets the configuration knows about: the built-in data, or a real benchmark (trainset, testset).
DATASETS = (BUILTIN, REAL)

#: FNAC's options in the presets trained from scratch (smoke, demo, stamps): weights 10, detached targets.
FROM_SCRATCH_FNAC = dict(w_fns_audio=10.0, w_fns_visual=10.0, w_tne=10.0, detach_targets=True)

PRESETS: dict[str, dict[str, Any]] = {
    # A minute on two CPU cores: tiny data and a shallow model, for tests and notebook smoke runs.
    "smoke": dict(
        visual_stage=2, audio_stage=2, embed_dim=64, visual_pretrained=False, centre_norm=True,
        image_size=32, n_train=192, n_val=64, n_test=64, batch_size=32, epochs=2, lr=3e-3, tau=0.1,
        eval_batch_size=64, fnac=dict(warmup_epochs=1, **FROM_SCRATCH_FNAC)),
    # The `make demo` run: ResNet-18 cut after stage 2 on 48 px built-in data, from scratch. Chosen over
    # several seeds (docs/findings/demo-runs.md): tau 0.1 (at 0.03 neither model learns within
    # 8 epochs from scratch), FNAC weights 10 with detached targets (100, or undetached targets, collapse).
    "demo": dict(
        visual_stage=2, audio_stage=2, embed_dim=128, visual_pretrained=False, centre_norm=True,
        image_size=48, n_train=3000, n_val=500, n_test=500, batch_size=64, epochs=8, lr=3e-3, tau=0.1,
        eval_batch_size=125, fnac=dict(warmup_epochs=2, **FROM_SCRATCH_FNAC)),
    # The published objective on the built-in data, from the built-in pretrained visual stream: tau 0.03, FNAC
    # weights 100 at B = 128 (w / B = 0.78), 3 warm-up epochs, visual dropout 0.9, targets not detached, no
    # centring. Where it still differs from the paper: 48 px images cut after stage 2 (not 224 px after stage 4),
    # a 128-d embedding, 3,000 training clips of 20 classes, the visual stream pretrained on 64 built-in object
    # kinds (not ImageNet), the audio stream from scratch, and lr 3e-3 for 12 epochs (published: 1e-4 for 20
    # epochs over 144k clips; 1e-4 barely moves 300 steps).
    "paper_builtin": dict(
        visual_stage=2, audio_stage=2, embed_dim=128, visual_pretrained=False, visual_pretrain="demo",
        image_size=48, n_train=3000, n_val=500, n_test=500, batch_size=128, epochs=12,
        lr=3e-3, eval_batch_size=125),
    # Tux Paint's real photographs and recordings (make stamps-benchmark), the demo's model and objective: ResNet-18
    # cut after stage 2 from scratch on both streams, tau 0.1, FNAC weights 10 with detached targets. Real frames
    # are 224 px. The data paths come from test_root (default: the benchmark's root), see preset().
    "stamps": dict(
        dataset=REAL, trainset="stamps", testset="vggss",
        visual_stage=2, audio_stage=2, embed_dim=128, visual_pretrained=False, centre_norm=True,
        batch_size=64, epochs=8, lr=3e-3, tau=0.1, eval_batch_size=64, fnac=dict(warmup_epochs=2, **FROM_SCRATCH_FNAC)),
    # The published configuration on VGG-Sound 144k, selected on half of VGG-SS and tested on the other half;
    # needs train_root (or cache_dir), test_root and test_annotations, a pretrained visual stream and a GPU.
    # Epochs, warm-up and batch size are the published training script's argument defaults (20 / 3 / 128).
    "paper": dict(dataset=REAL, trainset="vggss_144k", testset="vggss", num_workers=8),
    # The same with the published shell scripts' settings for the Flickr, VGG-SS and heard runs (30 / 5 / 256).
    "paper_scripts": dict(dataset=REAL, trainset="vggss_144k", testset="vggss", num_workers=8,
                          epochs=30, batch_size=256, fnac=dict(warmup_epochs=5)),
}


@dataclass(frozen=True)
class PretrainConfig(_Settings):
    """Supervised pretraining of the visual stream on single built-in objects: the built-in analogue of the
    ImageNet pretraining the paper starts from (``fnac-lab pretrain``, :mod:`fnac_lab.pretrain`).

    The backbone is cut as the audio-visual model cuts it (``visual_backbone``, ``visual_stage``) and classifies
    every object kind the built-in generator draws (``n_classes`` up to 64 shape-colour pairs, a superset of the
    audio-visual classes), from images of the audio-visual data's size with the ImageNet normalisation.
    """

    visual_backbone: str = "resnet18.tv_in1k"  #: timm name, cut as the audio-visual model cuts it
    visual_stage: int = 2  #: timm feature stage whose map is pooled and classified
    image_size: int = 48  #: object images' size (the audio-visual data's)
    n_classes: int = 64  #: object kinds classified (shape-colour pairs, up to 64)
    n_train: int = 12000  #: training images
    n_val: int = 1000  #: validation images (accuracy reported)
    epochs: int = 5  #: training epochs
    batch_size: int = 128  #: images per batch
    lr: float = 3e-3  #: Adam learning rate
    weight_decay: float = 1e-4  #: Adam weight decay
    seed: int = 0  #: initialisation, data and batch order
    device: str = "auto"  #: auto (CUDA when present, else CPU), cpu, cuda or cuda:N
    tensorboard: bool = True  #: TensorBoard event files of every epoch in OUT/tensorboard/ (fnac_lab.tensorboard_events)

    def _validate(self) -> None:
        need = self.need
        for name in ("n_train", "n_val", "epochs", "batch_size"):
            need(getattr(self, name) >= 1, name, "must be a positive integer")
        need(0 <= self.visual_stage <= 4, "visual_stage", "must be a timm feature stage between 0 and 4")
        need(2 <= self.n_classes <= 64, "n_classes", "must be between 2 and 64 (the built-in object kinds)")
        need(self.image_size >= 16, "image_size", "must be at least 16 px")
        need(math.isfinite(self.lr) and self.lr > 0, "lr", "must be a positive finite number")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "must be non-negative")
        need(self.batch_size <= self.n_train, "batch_size", f"exceeds n_train={self.n_train}")
        need(self.device == "auto" or self.device.split(":")[0] in DEVICE_KINDS, "device",
             "must be auto, cpu, cuda[:N] or mps")
        check_backbone("visual_backbone", self.visual_backbone)


#: Built-in pretraining presets; the backbone, its cut and the image size come from the run that uses them.
PRETRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(visual_stage=2, image_size=32, n_train=1024, n_val=256, epochs=3, batch_size=64),
    "demo": dict(visual_stage=2, image_size=48),
}


def pretrain_preset(name: str, **overrides: Any) -> PretrainConfig:
    """The named pretraining preset with ``overrides`` applied."""
    if name not in PRETRAIN_PRESETS:
        raise ConfigError(f"unknown pretraining preset {name!r} (choose from {', '.join(PRETRAIN_PRESETS)})")
    check_keys(overrides, PretrainConfig)
    return PretrainConfig(**{**PRETRAIN_PRESETS[name], **overrides})


def pretrain_config_for(cfg: TrainConfig) -> PretrainConfig:
    """The pretraining that ``cfg.visual_pretrain`` names, cut and sized for ``cfg``'s visual stream."""
    return pretrain_preset(cfg.visual_pretrain, visual_backbone=cfg.visual_backbone, visual_stage=cfg.visual_stage,
                           image_size=cfg.image_size, device=cfg.device)


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The named preset with ``overrides`` applied. The ``stamps`` preset's data paths lie under ``test_root``
    (default: :func:`~fnac_lab.utils.stamps_benchmark_root`) as :data:`~fnac_lab.data.catalogue.STAMPS_LAYOUT` names
    them, each unless given."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    values = dotted(PRESETS[name])
    if name == "stamps":
        given = dotted(overrides)
        root = Path(given.get("test_root") or stamps_benchmark_root())
        values.update({k: str(root / v) for k, v in STAMPS_LAYOUT.items() if given.get(k) is None},
                      test_root=str(root))
    return _build(values, overrides)
