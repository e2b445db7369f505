"""mkdocs hook: a page may include a section of another Markdown file instead of copying it.

    <!-- include: README.md "## Mixed precision: `optax_like.amp.GradScaler`" -->

is replaced by that section (from the heading to the next heading of the same or a higher level,
fenced code skipped when looking for headings), its headings shifted so that the included heading
becomes the page's level-1 title (or `level=N`: `<!-- include: README.md "## X" level=2 -->`).
`"#"` alone includes the file's text before its first `##` heading, without the title.
Links are rewritten for the site: `docs/page.md` -> `page.md`; other repository files (BENCHMARKS.md,
examples/...) keep their text and lose the link (they are not pages of the site).
A heading that is not found fails the build (mkdocs build --strict).
"""

import pathlib
import re

_INCLUDE = re.compile(r'<!--\s*include:\s*(\S+)\s+"([^"]+)"(?:\s+level=(\d))?\s*-->')
_HEADING = re.compile(r"^(#{1,6})\s")
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")
_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _lines_outside_fences(lines):
    fence = None
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith("```") or stripped.startswith("~~~"):
            marker = stripped[:3]
            fence = None if fence == marker else (fence or marker)
            yield i, None
        else:
            yield i, (None if fence else line)


def extract_section(text: str, heading: str, level: int = 1) -> str:
    lines = text.splitlines()
    headings = [(i, len(m.group(1))) for i, line in _lines_outside_fences(lines) if line and (m := _HEADING.match(line))]
    if heading == "#":
        end = next((i for i, depth in headings if depth >= 2), len(lines))
        body = [line for line in lines[:end] if not line.startswith("# ")]
        return _rewrite_links("\n".join(body))
    start = next((i for i, _ in headings if lines[i].strip() == heading.strip()), None)
    if start is None:
        raise ValueError(f"include: heading {heading!r} not found")
    depth = len(_HEADING.match(lines[start]).group(1))
    end = next((i for i, d in headings if i > start and d <= depth), len(lines))
    heading_lines = {i for i, _ in headings}
    shift = level - depth
    out = []
    for i in range(start, end):
        line = lines[i]
        if i in heading_lines:
            line = "#" * max(1, len(_HEADING.match(line).group(1)) + shift) + line.lstrip("#")
        out.append(line)
    return _rewrite_links("\n".join(out))


def _rewrite_links(text: str) -> str:
    def link(m):
        label, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+://|^#|^mailto:", target):
            return m.group(0)
        if target.startswith("docs/"):
            return f"[{label}]({target[len('docs/'):]})"
        if "/" not in target.split("#")[0] and target.endswith(".md") and (_ROOT / "docs" / target).is_file():
            return m.group(0)  # already a page of the site
        return label

    return _LINK.sub(link, text)


def on_page_markdown(markdown, page, config, files):
    def include(m):
        source = _ROOT / m.group(1)
        return extract_section(source.read_text(encoding="utf-8"), m.group(2), int(m.group(3) or 1))

    markdown = _INCLUDE.sub(include, markdown)
    # links from docs/*.md to repository files outside docs/ (../BENCHMARKS.md): text only on the site
    return _LINK.sub(lambda m: m.group(1) if m.group(2).startswith("../") else m.group(0), markdown)


# --- API reference pages: `<!-- api: optax_like.optimizers -->` --------------------------------------
# expands to the module's docstring and one mkdocstrings entry per name of its `__all__`, each rendered
# from the module that defines it (a package re-exporting `adam` from its submodule `adam` hides the
# function behind the submodule in a static reading). Classes the adapter builds at import time
# (optim.Adam, ...) are rendered from the imported object (signature and docstring).
_API = re.compile(r"<!--\s*api:\s*([\w.]+)\s*-->")


def _api_page(module_name: str) -> str:
    import importlib
    import inspect
    import types

    module = importlib.import_module(module_name)
    out = [f"::: {module_name}", "    options:", "      members: false", "      show_root_heading: false", ""]
    for name in module.__all__:
        obj = getattr(module, name)
        if isinstance(obj, types.ModuleType):
            out.append(f"- `{module_name}.{name}`: a module, with its own page in this reference.\n")
            continue
        defining = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        dynamic = False
        if inspect.isclass(obj) or inspect.isfunction(obj):
            target = f"{defining}.{qualname}" if defining and qualname and "<" not in qualname else f"{module_name}.{name}"
            dynamic = not _defined_by_statement(defining, qualname)
        else:
            target = f"{module_name}.{name}"
        if dynamic:  # built at import time: a static reading sees an assignment; render what Python sees
            try:
                signature = f"{name}{inspect.signature(obj)}"
            except (TypeError, ValueError):
                signature = name
            out += [f"## {name}", "", "```python", signature, "```", "", inspect.getdoc(obj) or "", ""]
            continue
        out.append(f"::: {target}")
        out.append("    options:")
        out.append(f"      heading: {name}")
        out.append("      heading_level: 2")
        out.append("      show_root_full_path: false")
        out.append("")
    return "\n".join(out)


def _defined_by_statement(module_name, qualname) -> bool:
    """Whether `qualname` is a `def`/`class` statement of the module (a static reading finds it)."""
    import importlib
    import inspect

    if not module_name or not qualname or "." in qualname or "<" in qualname:
        return False
    try:
        source = inspect.getsource(importlib.import_module(module_name))
    except (OSError, TypeError):
        return False
    return re.search(rf"^(?:async\s+)?(?:def|class)\s+{re.escape(qualname)}\b", source, re.M) is not None


_page_markdown = on_page_markdown


def on_page_markdown(markdown, page, config, files):  # noqa: F811
    markdown = _API.sub(lambda m: _api_page(m.group(1)), markdown)
    return _page_markdown(markdown, page, config, files)
