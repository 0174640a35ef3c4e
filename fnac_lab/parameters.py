"""A notebook's own parameters (those that are not configuration settings) as papermill users write them.

``papermill -p smoke false`` hands the notebook the text ``"false"``, which Python reads as true; ``-p k 3`` an int,
``-r k 3`` the text ``"3"``. Each notebook passes its parameters through these functions first: the words and
numbers a configuration setting accepts (:func:`fnac_lab.coercion.coerce_value`: ``true`` / ``false`` / ``1`` / ``0``,
numbers as text, ``none``) become their values, and anything else is refused with one line naming the parameter.
"""

from __future__ import annotations

import json
from typing import Any

from .coercion import ConfigError, coerce_value
from .utils import FnacError


def _checked(name: str, value: Any, tp: type, optional: bool) -> Any:
    try:
        return coerce_value(name, value, tp, optional=optional)
    except ConfigError as exc:
        raise FnacError(f"notebook parameter {exc}") from None


def flag_parameter(name: str, value: Any) -> bool:
    """``True`` or ``False`` from a bool, 1 / 0, or the words true / false / yes / no / on / off / 1 / 0."""
    return _checked(name, value, bool, False)


def int_parameter(name: str, value: Any, *, minimum: int | None = None, optional: bool = False) -> int | None:
    """A whole number (also written as text), at least ``minimum``; None when ``optional`` and not given."""
    number = _checked(name, value, int, optional)
    if number is not None and minimum is not None and number < minimum:
        raise FnacError(f"notebook parameter {name}: {number} is below its least value, {minimum}")
    return number


def float_parameter(name: str, value: Any, *, minimum: float | None = None,
                    optional: bool = False) -> float | None:
    """A number (also written as text), at least ``minimum``; None when ``optional`` and not given."""
    number = _checked(name, value, float, optional)
    if number is not None and minimum is not None and not number >= minimum:
        raise FnacError(f"notebook parameter {name}: {number} is below its least value, {minimum}")
    return number


def names_parameter(name: str, value: Any, *, optional: bool = False) -> list[str] | None:
    """A list of names: a list of texts, or one text of comma-separated names (``-p grids fn_ratio,warmup``)."""
    if value is None and optional:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise FnacError(f"notebook parameter {name}: expected a list of names or comma-separated names, got {value!r}")
    return list(value)


def mapping_parameter(name: str, value: Any) -> dict[str, Any]:
    """A mapping: a dict, or the text of a JSON object (``-p base '{"seed": 1}'``)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if not isinstance(value, dict):
        raise FnacError(f"notebook parameter {name}: expected a mapping such as {{\"seed\": 1}}, got {value!r}")
    return value
