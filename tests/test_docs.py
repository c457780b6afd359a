"""Every ```python block of README.md and docs/*.md runs as written.

The blocks of one file run in sequence, in one namespace (a later block may use what an
earlier one defined, as a reader following the page would), in a fresh temporary current
folder. A block preceded by an HTML comment ``<!-- skip-test: reason -->`` (it needs the
datasets or minutes) is not run; the README's quickstart never is skipped. Each page is one
test; the failing block is named by its first line number in the file.
"""
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_BLOCK = re.compile(r"(?P<skip><!--\s*skip-test:(?P<reason>.*?)-->\s*\n)?"
                    r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str):
    """``(line, code, skip_reason)`` of every ```python block in ``text``."""
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code")) + 1
        reason = m.group("reason").strip() if m.group("skip") else None
        yield line, m.group("code"), reason


def test_blocks_are_found_and_skip_markers_read():
    text = ("intro\n```python\na = 1\n```\n\n<!-- skip-test: needs MNIST -->\n"
            "```python\nb = 2\n```\n```bash\nls\n```\n")
    assert list(python_blocks(text)) == [(3, "a = 1\n", None), (8, "b = 2\n", "needs MNIST")]


def test_the_readme_quickstart_is_never_skipped():
    blocks = list(python_blocks((REPO / "README.md").read_text()))
    assert blocks, "README.md has no python block"
    assert all(reason is None for _, _, reason in blocks)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_snippets_run(page, tmp_path, monkeypatch):
    blocks = list(python_blocks(page.read_text()))
    if not any(reason is None for _, _, reason in blocks):
        pytest.skip(f"{page.name}: no python block to run")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRAINSNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": f"docs_{page.stem}"}
    for line, code, reason in blocks:
        if reason is not None:
            continue
        where = f"{page.relative_to(REPO)}:{line}"
        try:
            exec(compile(code, where, "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"the python block at {where} fails: "
                                 f"{type(exc).__name__}: {exc}") from exc
    assert os.getcwd() == str(tmp_path)
