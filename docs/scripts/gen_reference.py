"""Pages written at build time (mkdocs-gen-files): the configuration reference, made from the settings' own
comments in the source, and one API reference page per module of ``fnac_lab`` with its navigation
(``reference/SUMMARY.md``, read by mkdocs-literate-nav)."""

from __future__ import annotations

import ast
import dataclasses
import html
import inspect
import io
import textwrap
import tokenize
import typing
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fnac_lab"
CONFIG_PAGE = "configuration-reference.md"


def field_comments(cls: type) -> dict[str, tuple[str, str]]:
    """Each field that ``cls`` itself declares: the ``# Heading`` comment line above it (its section, "" when none)
    and its own ``#:`` comment ("" when none)."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    out, section, seen = {}, "", 0
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            headings = [c for line, c in comments.items() if seen < line < node.lineno and not c.startswith("#:")]
            section = headings[-1].lstrip("# ").strip() if headings else section
            own = comments.get(node.lineno, "")
            out[node.target.id] = (section, own[2:].strip() if own.startswith("#:") else "")
        seen = getattr(node, "end_lineno", node.lineno)
    return out


def declared_comments(cls: type) -> dict[str, tuple[str, str]]:
    """:func:`field_comments` of ``cls`` and of the dataclasses it inherits fields from."""
    out = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base) and base.__module__.startswith("fnac_lab"):
            out.update(field_comments(base))
    return out


def markdown_text(text: str) -> str:
    """``text`` safe in a Markdown table cell: code spans kept, HTML special characters and pipes escaped."""
    parts = text.split("`")
    parts = [p if i % 2 else html.escape(p, quote=False) for i, p in enumerate(parts)]
    return "`".join(parts).replace("|", "\\|")


def type_name(tp: typing.Any) -> str:
    """How a field's annotation reads: ``int``, ``str or None``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        return f"{type_name(args[0])} or None"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def settings_table(cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> list[str]:
    """One Markdown table per section of ``cls``'s fields: setting, type, default, and the field's comment."""
    hints = typing.get_type_hints(cls)
    comments = declared_comments(cls)
    lines, section = [], None
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        heading, comment = comments.get(f.name, ("", ""))
        if heading != section:
            section = heading
            if heading:
                lines += ["", f"### {heading}", ""]
            lines += ["| setting | type | default | what |", "| --- | --- | --- | --- |"]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"| `{prefix}{f.name}` | {type_name(hints[f.name])} | `{default!r}` | {markdown_text(comment)} |")
    return lines


def configuration_page() -> str:
    """The configuration reference: :class:`TrainConfig`'s fields by section, each registered method's options,
    and :class:`PretrainConfig`'s fields."""
    from fnac_lab.config import PretrainConfig, TrainConfig
    from fnac_lab.methods import METHODS

    lines = ["# Configuration reference", "",
             "Every setting of a run, made from the comments beside the fields in `fnac_lab/config.py` and in each",
             "method's options class when this site is built. A setting is set by name: `--set name=value` on the",
             "command line, a notebook's `overrides`, a grid, or Python (`preset(\"demo\", lr=1e-3)`). What the",
             "presets change, and which settings deviate from the paper: [Configuration](configuration.md).", "",
             "## Common settings (`TrainConfig`)"]
    lines += settings_table(TrainConfig, skip=("options",))
    lines += ["", "## Method options", "",
              "Named `method.option` (`--set fnac.w_tne=0`); a run takes the options of its `method`."]
    for name, method in METHODS.items():
        lines += ["", f"### `{name}`", ""] + settings_table(method.options_class, f"{name}.")
    lines += ["", "## Visual pretraining (`PretrainConfig`, `fnac-lab pretrain`)", ""]
    lines += settings_table(PretrainConfig)
    return "\n".join(lines) + "\n"


def reference_pages() -> None:
    """One page per module, ``::: fnac_lab.x`` (mkdocstrings), and the section's navigation."""
    nav = mkdocs_gen_files.Nav()
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        page = Path("reference", *parts[1:] or ["index"]).with_suffix(".md")
        if parts[-1] != "fnac_lab" and path.name == "__init__.py":
            page = page.with_suffix("") / "index.md"
        nav[parts] = page.relative_to("reference").as_posix()
        with mkdocs_gen_files.open(page, "w") as out:
            out.write(f"# `{'.'.join(parts)}`\n\n::: {'.'.join(parts)}\n")
        mkdocs_gen_files.set_edit_path(page, path.relative_to(ROOT))
    with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as out:
        out.writelines(nav.build_literate_nav())


with mkdocs_gen_files.open(CONFIG_PAGE, "w") as page_file:
    page_file.write(configuration_page())
reference_pages()
