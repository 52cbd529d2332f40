"""Every ```python block of the docs and the README runs as written (offline)."""

import os
import re
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```python\n(.*?)```", re.S)


def snippets():
    for doc in DOCS:
        if not doc.exists():
            continue
        for i, block in enumerate(FENCE.findall(doc.read_text())):
            # data-shape examples (a bare dict literal) are illustrations, not programs
            if block.lstrip().startswith("{"):
                continue
            yield pytest.param(block, id=f"{doc.name}-{i}")


@pytest.mark.parametrize("code", list(snippets()))
def test_doc_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    exec(compile(code, "<doc>", "exec"), {"__name__": "__doc__"})
