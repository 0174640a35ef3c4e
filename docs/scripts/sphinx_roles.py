"""Griffe extension: the Sphinx roles of the package's docstrings (``:func:`~fnac_lab.metrics.ciou```) read as code
(``ciou``) in the API reference, with the name the role would show: the last part after ``~``, else the whole
target."""

from __future__ import annotations

import re

import griffe

#: A Sphinx role and its target: ``:func:`~a.b``` or ``:class:`Name```.
ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|obj|exc):`(?P<tilde>~?)(?P<target>[^`]+)`")


def as_code(text: str) -> str:
    """``text`` with every Sphinx role replaced by a code span of the name it shows."""
    def code(match: re.Match) -> str:
        target = match["target"]
        return f"`{target.rsplit('.', 1)[-1] if match['tilde'] else target}`"

    return ROLE.sub(code, text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        self._rewrite(pkg, set())

    def _rewrite(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = as_code(obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._rewrite(member, seen)
