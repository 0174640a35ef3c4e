"""The documentation site: `mkdocs build --strict` passes (no broken link, no missing reference), the generated
configuration reference holds every setting with the comment beside its field in the source, the notebooks page
links every notebook, links out of docs/ are checked, and the README links into the pages that exist."""

import dataclasses
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
QUIET = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, env=QUIET, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = mkdocs_build(REPO / "mkdocs.yml", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-3000:]
    return out


class TableRows(HTMLParser):
    """The text of every table row of an HTML page, cell by cell."""

    def __init__(self):
        super().__init__()
        self.rows, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_rows(html: str) -> dict[str, list[str]]:
    """The four-cell rows of the tables of ``html`` by their first cell, in order."""
    parser = TableRows()
    parser.feed(html)
    return {row[0]: row for row in parser.rows if len(row) == 4 and row[0] != "setting"}


def comment_beside(cls: type, name: str) -> str:
    """The ``#:`` comment on the line that declares ``name`` in the class that declares it ("" when none), read
    from that class's source text."""
    owner = next(c for c in cls.__mro__ if name in c.__dict__.get("__annotations__", {}))
    match = re.search(rf"^\s+{name}\s*:[^\n]*?#:\s*(.*)$", inspect.getsource(owner), flags=re.M)
    return match[1].strip() if match else ""


def test_the_site_builds_with_every_page_in_place(site):
    for page in ("index.html", "getting-started/index.html", "findings/diagnosis/index.html",
                 "configuration-reference/index.html", "reference/losses/index.html", "architecture/index.html",
                 "published-checkpoints/index.html", "tensorboard/index.html", "sweeps-on-a-cluster/index.html"):
        assert (site / page).is_file(), page
    losses = (site / "reference/losses/index.html").read_text()
    assert "max_pooled_logits" in losses and ":func:`" not in losses  # the docstrings, their roles read as code
    architecture = (site / "architecture/index.html").read_text()
    assert "No module of <code>fnac_lab</code> is over 450 lines" in architecture  # ARCHITECTURE.md included


def test_the_configuration_reference_lists_every_setting_with_its_comment(site):
    from fnac_lab.config import PretrainConfig, TrainConfig
    from fnac_lab.methods import METHODS

    run_part, pretrain_part = (site / "configuration-reference/index.html").read_text().split(
        '<h2 id="visual-pretraining')
    rows, pretrain_rows = (table_rows(part) for part in (run_part, pretrain_part))
    expected = [(f.name, comment_beside(TrainConfig, f.name)) for f in dataclasses.fields(TrainConfig)
                if f.name != "options"]
    for method, cls in METHODS.items():
        expected += [(f"{method}.{f.name}", comment_beside(cls.options_class, f.name))
                     for f in dataclasses.fields(cls.options_class)]
    assert len(expected) > 60 and sum(bool(c) for _, c in expected) > 30
    for name, comment in expected:
        assert name in rows, name
        assert rows[name][3] == comment.replace("`", ""), name
    assert rows["tau"][2] == repr(TrainConfig.tau) and rows["fnac.w_tne"][2] == "100.0"
    assert [f.name for f in dataclasses.fields(PretrainConfig)] == list(pretrain_rows)


def test_the_notebooks_page_links_every_notebook_to_its_copy(site):
    page = (site / "notebooks/index.html").read_text()
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert f'href="../repository/notebooks/{notebook.name}"' in page, notebook.name
        assert (site / "repository/notebooks" / notebook.name).read_bytes() == notebook.read_bytes()


def test_a_link_out_of_docs_to_a_missing_file_fails_the_strict_build(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "present.ipynb").write_text("{}")
    (tmp_path / "mkdocs.yml").write_text(f"site_name: t\nhooks:\n  - {REPO / 'docs/scripts/repository_links.py'}\n")
    (tmp_path / "docs/index.md").write_text("[there](../present.ipynb) and [inside](other.md)\n")
    (tmp_path / "docs/other.md").write_text("# other\n")
    assert mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site").returncode == 0
    assert 'href="repository/present.ipynb"' in (tmp_path / "site/index.html").read_text()
    (tmp_path / "docs/index.md").write_text("[there](../present.ipynb) and [gone](../missing.ipynb)\n")
    failed = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site2")
    assert failed.returncode != 0 and "../missing.ipynb" in failed.stderr


def test_the_readme_links_into_pages_that_exist():
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert "docs/published-checkpoints.md" in targets and "docs/findings/index.md" in targets
    assert [t for t in targets if not (REPO / t).is_file()] == []
    assert len(readme.splitlines()) < 200


def test_the_readme_figure_is_drawn_from_the_built_in_data(tmp_path):
    spec = importlib.util.spec_from_file_location("readme_figure", REPO / "docs/scripts/readme_figure.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # in this process: the package is imported once for the suite's file
    assert script.main(tmp_path / "f.png") == tmp_path / "f.png"
    with Image.open(tmp_path / "f.png") as drawn, Image.open(REPO / "docs/images/builtin-samples.png") as committed:
        assert drawn.size == committed.size
