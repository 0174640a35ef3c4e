"""What the commands' shared arguments mean: ``--set key=value`` items as a configuration's overrides."""

from __future__ import annotations

from ..config import ConfigError, check_keys


def parse_overrides(items: list[str], cls: type = None) -> dict[str, str]:
    """``["key=value", ...]`` from the command line into a dict (values stay strings until coerced); keys are
    checked against the fields of ``cls`` (default :class:`TrainConfig`)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    check_keys(out, cls)
    return out
