"""What a training method is: its options, the terms of a batch, the weights of those terms by epoch.

A method turns the model's outputs for one batch, the visual maps ``img`` ``[B, C, H, W]`` and the audio embeddings
``aud`` ``[B, C]`` (both L2-normalised over ``C``), into named scalar terms. The training loop knows no method: it
asks :meth:`Method.weights` for the epoch's weights and minimises ``sum_k weights[k] * terms[k]`` over the terms the
weights name (:func:`weighted_total`); every term is still reported, weighted or not. A method's math lives in
:mod:`fnac_lab.losses`, one function per term; the method file states which terms it uses and when.

Methods register by name (:func:`register_method`) and are built from the configuration's ``method`` and that
method's options (:func:`build_method`).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, ClassVar, Mapping

import torch

from ..coercion import ConfigError, coerce
from ..losses import TNE_THRESHOLD, own_maps, similarity_maps


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """A method's options: every field is coerced to its annotated type on construction (``"0"`` to 0.0,
    ``"soft"`` to None) and checked by :meth:`check`; a refusal is one :class:`ConfigError` line that names the
    option as ``method.option``."""

    #: The method these options belong to (set by :func:`register_method`), for the names in messages.
    method: ClassVar[str] = ""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, coerce(f"{self.method}.{f.name}", getattr(self, f.name), hints[f.name]))
        self.check()

    def check(self) -> None:
        """Refuse values outside an option's range (override; use :meth:`need`)."""

    def need(self, ok: bool, name: str, rule: str) -> None:
        """Raise :class:`ConfigError` ``method.name=value: rule`` unless ``ok``."""
        if not ok:
            raise ConfigError(f"{self.method}.{name}={getattr(self, name)!r}: {rule}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "MethodOptions":
        """Options from ``values`` (text or typed); an unknown name is refused, the closest one suggested."""
        for key in values:
            if key not in cls.names():
                near = difflib.get_close_matches(key, cls.names(), n=1)
                hint = f" (did you mean {cls.method}.{near[0]}?)" if near else ""
                raise ConfigError(f"unknown setting {cls.method}.{key}: method {cls.method!r} has no option "
                                  f"{key!r}{hint}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Method:
    """A training objective over one batch. Subclasses set :attr:`name` (through :func:`register_method`),
    :attr:`label`, :attr:`options_class`, :attr:`term_labels`, and implement :meth:`terms`; the rest has defaults.

    ``tau`` is the model's temperature (the cross-modal similarities are divided by it); ``options`` an instance of
    :attr:`options_class`.
    """

    name: ClassVar[str] = ""
    #: How tables, figures and progress bars name the method.
    label: ClassVar[str] = ""
    #: The method's colour in every figure (a hex RGB string).
    colour: ClassVar[str] = "#7f7f7f"
    options_class: ClassVar[type[MethodOptions]] = MethodOptions
    #: The terms :meth:`terms` returns, in the order they are summed and reported, with how figures title them.
    term_labels: ClassVar[Mapping[str, str]] = {}
    #: Whether the method itself reads every batch's class labels (a diagnostic with an oracle), whatever its options.
    reads_labels: ClassVar[bool] = False

    def __init__(self, options: MethodOptions, *, tau: float):
        if not isinstance(options, self.options_class):
            raise TypeError(f"{self.name} takes {self.options_class.__name__}, got {type(options).__name__}")
        self.options, self.tau = options, tau

    def labelled_options(self) -> list[str]:
        """The options, as set, that make :meth:`terms` read the batch's class labels (diagnostics with an oracle)."""
        return []

    @property
    def needs_labels(self) -> bool:
        """Whether :meth:`terms` reads the batch's class labels."""
        return self.reads_labels or bool(self.labelled_options())

    @property
    def foreground_threshold(self) -> float | None:
        """The threshold of the foreground mask with which validation pools ``f`` for false-negative detection
        (:func:`fnac_lab.losses.foreground_features`; None: the soft mask)."""
        return TNE_THRESHOLD

    def terms(self, img: torch.Tensor, aud: torch.Tensor, *, labels: torch.Tensor | None = None,
              sim: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The scalar terms of one batch, keyed as :attr:`term_labels`. ``sim`` is
        :func:`~fnac_lab.losses.similarity_maps` of ``img`` and ``aud`` at :attr:`tau` when the caller has it."""
        raise NotImplementedError

    def weights(self, epoch: int) -> dict[str, float]:
        """Each minimised term's weight in epoch ``epoch`` (0-based); a term left out is reported, not minimised."""
        raise NotImplementedError

    #: Whether the method watches itself against the class labels during training (:meth:`monitor`); the loop then
    #: hands it the labels of batches that have them, never to its terms.
    monitors: ClassVar[bool] = False

    def monitor(self, img: torch.Tensor, aud: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Counts of one batch against its class labels (scalar tensors, no gradient), summed over the epoch."""
        return {}

    def monitor_record(self, sums: Mapping[str, float]) -> dict[str, Any]:
        """The fields of an epoch's line of ``metrics.jsonl`` made from the epoch's summed :meth:`monitor` counts."""
        return {}

    def epoch_record(self, epoch: int) -> dict[str, Any]:
        """Fields the method adds to epoch ``epoch``'s line of ``metrics.jsonl`` (none by default)."""
        return {}

    def check_epochs(self, epochs: int) -> None:
        """Refuse, with :class:`ConfigError`, a run of ``epochs`` epochs in which the method cannot do what its options
        say (a term that would never join)."""

    @property
    def warmup_epochs(self) -> int:
        """Epochs of plain NCE before the method's own terms join (0: none)."""
        return 0

    def localisation_maps(self, img: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        """Each sample's localisation map ``S[b, b]`` as ``[B, H, W]`` (:func:`~fnac_lab.losses.own_maps`)."""
        return own_maps(similarity_maps(img, aud, self.tau))

    def trains_nce_only(self, epochs: int) -> bool:
        """Whether every epoch minimises the contrastive term alone: the run is its own NCE twin."""
        return all(set(k for k, w in self.weights(e).items() if w) <= {"nce"} for e in range(epochs))


def weighted_total(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """``sum_k weights[k] * terms[k]`` over the terms ``weights`` names, in the terms' order; a weight of exactly 1 adds
    the term itself. A term named with weight 0 stays in the sum (and in the backward graph) as ``0 * term``, as the
    published FNAC total keeps its switched-off terms: runs recorded that way reproduce to the last digit."""
    total = None
    for key, term in terms.items():
        if key in weights:
            w = weights[key]
            part = term if w == 1 else w * term
            total = part if total is None else total + part
    if total is None:
        raise ValueError(f"no term is weighted (terms {list(terms)}, weights {dict(weights)})")
    return total


#: Every registered method by name.
METHODS: dict[str, type[Method]] = {}
#: The method every other is measured against: a run's twin is the same configuration with this method.
BASELINE = "nce"
#: How tables and figures name a run's twin.
BASELINE_LABEL = "NCE baseline"
#: What follows a model's name in tables and figures when its weights are the initial ones.
UNTRAINED = " (untrained)"


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name`` (its options' messages use it too)."""
    def register(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered already ({METHODS[name].__module__})")
        if not name.isidentifier():
            raise ValueError(f"method name {name!r} must be an identifier (it prefixes options: {name}.option)")
        if cls.options_class.method not in ("", name):
            raise ValueError(f"method {name!r}: its options class belongs to {cls.options_class.method!r}; "
                             f"give it its own")
        cls.name = name
        cls.options_class.method = name
        METHODS[name] = cls
        return cls
    return register


def method_class(name: str) -> type[Method]:
    """The registered method ``name``, or one :class:`ConfigError` line listing the methods there are."""
    if name not in METHODS:
        raise ConfigError(f"method={name!r}: unknown method (registered: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def build_method(name: str, options: MethodOptions | Mapping[str, Any] | None = None, *, tau: float) -> Method:
    """The method ``name`` with ``options`` (its options instance, or a mapping checked into one; None: defaults)."""
    cls = method_class(name)
    if not isinstance(options, MethodOptions):
        options = cls.options_class.from_values(dict(options or {}))
    return cls(options, tau=tau)
