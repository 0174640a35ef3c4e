"""Training methods, one file each, registered by name: ``METHODS[cfg.method]`` with that method's options.

``nce`` (EZ-VSL, the baseline) and ``fnac`` (Sun et al., CVPR 2023). Every module of this package is imported here,
so adding a method is one file: a :class:`~fnac_lab.methods.base.MethodOptions` dataclass and a
:class:`~fnac_lab.methods.base.Method` subclass under :func:`~fnac_lab.methods.base.register_method`
(docs/adding-a-method.md).
"""

import importlib
import pkgutil

from .base import (BASELINE, BASELINE_LABEL, METHODS, Method, MethodOptions, build_method,  # noqa: F401
                   method_class, register_method, UNTRAINED, weighted_total)

#: Modules of this package that hold no method.
_SUPPORT = {"base", "settings"}
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _SUPPORT:
        importlib.import_module(f"{__name__}.{_module}")
