"""Every ```python block of README.md and docs/*.md is executed (the docs site shows the same text).

The blocks of one file run in order in one namespace, as a reader runs them: a block may use what an
earlier block of the same file defined. A block that cannot run as written is preceded by a comment that
says why, on the line just before its fence:

    <!-- not-run: a fragment of the train step above; `loss_fn` and `batch` are the reader's -->

Such blocks are shown, not run (they may hold `...` placeholders). A block that needs names the text leaves to the reader can
instead be preceded by hidden set-up code that runs first, in the same namespace:

    <!-- setup: lr = 0.1 -->

A multi-line set-up may start with a line that describes it (not code), shown to readers of the source:

    <!-- setup: a small model
    params = {"w": jnp.ones((3, 2))}
    -->

Blocks run in a temporary directory (files they write land there); `_repo_root` names the checkout.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?:<!--\s*(not-run|setup):[ \t]*(.*?)\s*-->\s*\n)?```python\n(.*?)^```", re.S | re.M)
_HEADING = re.compile(r"^(#{2,3} .*)$", re.M)

# Set-up for the first block of a section whose text is maintained elsewhere (the same rule as the
# `<!-- setup: ... -->` comment, kept here while those sections are edited by others): the reader's tree.
SECTION_SETUP = {
    ("README.md", "## Param groups by rules: `optax_like.param_groups`"): """
import jax.numpy as jnp
from optax_like import optim
params = {"embed": {"weight": jnp.ones((100, 64))},
          "blocks": {"0": {"attn": {"weight": jnp.ones((64, 64)), "bias": jnp.zeros(64)},
                           "norm": {"scale": jnp.ones(64)}}},
          "head": {"weight": jnp.ones((10, 64)), "bias": jnp.zeros(10)}}
grads = jax.tree.map(jnp.ones_like, params)
""",
}


def blocks(path):
    text = path.read_text(encoding="utf-8")
    # headings outside code blocks: blank out the blocks first
    headings = [(h.start(), h.group(1)) for h in _HEADING.finditer(_BLOCK.sub(lambda m: " " * len(m.group(0)), text))]
    seen = set()
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start(3)) + 1
        section = next((h for start, h in reversed(headings) if start < m.start()), None)
        kind, arg = m.group(1), m.group(2)
        extra = SECTION_SETUP.get((path.name, section)) if section not in seen else None
        seen.add(section)
        if extra and kind is None:
            kind, arg = "setup", extra
        yield line, kind, arg, m.group(3)


def test_convention_is_used_sparingly():
    skipped = [(p.name, line, why) for p in FILES for line, kind, why, _ in blocks(p) if kind == "not-run"]
    assert all(why for _, _, why in skipped), f"a not-run block without a reason: {skipped}"
    assert len(skipped) <= 12, f"{len(skipped)} blocks are not run; run them or give them set-up: {skipped}"


def _is_code(line):
    try:
        compile(line, "<setup>", "exec")
        return True
    except SyntaxError:
        return False


@pytest.mark.parametrize("path", [p for p in FILES if any(blocks(p))], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace = {"__name__": f"snippets_{path.stem}", "_repo_root": str(ROOT)}
    for line, kind, arg, code in blocks(path):
        where = f"{path.relative_to(ROOT)}:{line}"
        if kind == "not-run":
            continue
        compiled = compile(code, where, "exec")
        if kind == "setup":
            exec(compile(arg.split("\n", 1)[1] if "\n" in arg and not _is_code(arg.split("\n", 1)[0]) else arg, f"{where} (setup)", "exec"), namespace)
        try:
            exec(compiled, namespace)
        except Exception as e:  # the block's location first: that is what a reader needs
            raise AssertionError(f"{where}: {type(e).__name__}: {e}") from e
