"""MkDocs hook: links from a page to a file of the repository outside ``docs/`` (a notebook, a results table),
written relative to the page as GitHub reads them (``../notebooks/01_train.ipynb``), point in the site to a copy
of that file under ``repository/``. A link to a file that does not exist, or to a Markdown file outside ``docs/``,
is left as written, so that ``mkdocs build --strict`` reports it like any other broken link."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

#: A Markdown link's or image's target, without its anchor: ``](target#anchor)``.
LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
#: The site folder that holds the copies.
COPIES = "repository"

_copied: set[str] = set()


def repository_path(page_uri: str, target: str) -> str | None:
    """The repository path (relative to its root, the folder above ``docs/``) of a relative ``target`` that leaves
    ``docs/`` from the page ``page_uri``; None for a link inside the site, an absolute one, or one leaving the
    repository."""
    if "://" in target or target.startswith(("/", "mailto:")):
        return None
    path = posixpath.normpath(posixpath.join(posixpath.dirname(page_uri), target))
    if not path.startswith("../") or path.startswith("../../"):
        return None
    return path[3:]


def on_files(files: Files, config) -> Files:
    """Copy into the site every repository file a page links to outside ``docs/`` (Markdown files excepted)."""
    root = Path(config["docs_dir"]).resolve().parent
    _copied.clear()
    for page in list(files.documentation_pages()):
        for match in LINK.finditer(page.content_string):
            rel = repository_path(page.src_uri, match["target"])
            if rel and not rel.endswith(".md") and (root / rel).is_file() and rel not in _copied:
                _copied.add(rel)
                files.append(File.generated(config, f"{COPIES}/{rel}", abs_src_path=str(root / rel)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """The page with each link to a copied repository file pointed at its copy."""
    def point(match: re.Match) -> str:
        rel = repository_path(page.file.src_uri, match["target"])
        if rel not in _copied:
            return match[0]
        target = posixpath.relpath(f"{COPIES}/{rel}", posixpath.dirname(page.file.src_uri) or ".")
        return f"]({target}{match['anchor'] or ''})"

    return LINK.sub(point, markdown)
