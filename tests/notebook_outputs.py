"""What an executed notebook showed, for the notebook tests."""

from __future__ import annotations

import nbformat


def outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
    """Every output of ``mime`` in ``nb`` (``text/plain`` also collects the printed streams)."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and mime == "text/plain":
                found.append(out["text"])
            elif mime in out.get("data", {}):
                found.append(out["data"][mime])
    return found
