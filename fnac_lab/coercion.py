"""What a setting's value may be written as: the rules by which text from the command line, a notebook parameter or
a grid file becomes an int, float, bool or text setting (``"true"``, ``"0"``, ``"none"``, ``"1e-3"``), and the timm
backbone names a setting may hold. Each refusal is a :class:`ConfigError` naming the setting."""

from __future__ import annotations

import difflib
import functools
import typing
from typing import Any, Optional


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


def coerce_value(name: str, value: Any, tp: type, *, optional: bool = False) -> Any:
    """``value`` converted to ``tp`` (int, float, bool or str; None allowed when ``optional``) by the rules a
    configuration's fields follow: ``"true"``, ``"0"``, ``"none"``, ``"3"``, ``"1e-3"`` as their values; refused with
    :class:`ConfigError` naming ``name`` when it is none of them."""
    return coerce(name, value, Optional[tp] if optional else tp)


def base_type(tp: Any) -> tuple[type, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


_NONE_WORDS = {"none", "null", "soft", ""}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


#: Text fields that also take a boolean: true / false stand for these values (older configurations, grids).
_BOOLEAN_ALIASES = {"audio_augment": {True: "per_axis", False: "off"}}


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` (possibly a string from the command line) to the field's type, or refuse it."""
    tp, optional = base_type(annotation)
    aliases = _BOOLEAN_ALIASES.get(name)
    if aliases is not None:
        word = value.strip().lower() if isinstance(value, str) else value
        if isinstance(word, bool) or word in _TRUE | _FALSE:
            value = aliases[word if isinstance(word, bool) else word in _TRUE]
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if optional:
            return None
        raise ConfigError(f"{name}: a value is required, got None")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {'an optional ' if optional else ''}{tp.__name__}, got {value!r}") from None
    return value


@functools.lru_cache(maxsize=1)
def _timm_names() -> tuple[frozenset[str], frozenset[str]]:
    """timm's architecture names and its ``architecture.tag`` names with pretrained weights."""
    import timm

    return frozenset(timm.list_models()), frozenset(timm.list_models(pretrained=True))


def check_backbone(setting: str, name: str) -> None:
    """Refuse a backbone name timm does not know (an architecture, or one with a pretrained tag), suggesting the
    closest names. Names only: no model is built."""
    archs, tagged = _timm_names()
    if name in archs or name in tagged:
        return
    arch, _, tag = name.partition(".")
    if tag and arch in archs:
        tags = sorted(t.partition(".")[2] for t in tagged if t.partition(".")[0] == arch)
        listed = ", ".join(tags[:12]) + (", ..." if len(tags) > 12 else "")
        raise ConfigError(f"{setting}={name!r}: timm has no pretrained tag {tag!r} for {arch}"
                          + (f" (its tags: {listed})" if tags else f"; use {arch!r}"))
    near = difflib.get_close_matches(name, sorted(archs | tagged), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(map(repr, near))}?" if near else "timm.list_models() lists the names"
    raise ConfigError(f"{setting}={name!r}: not a timm model ({hint})")
