"""Every repository path a doc cites exists: relative Markdown links and the paths it names in the text
(`dmpo_trl/...`, `docs/...`, `recipes/...`, `tests/...`, `scripts/...`, `benchmarks/...`, and `../...` from a doc)."""

import re
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "recipes" / "README.md"]
TOP = ("dmpo_trl", "docs", "recipes", "tests", "scripts", "benchmarks")
LINK = re.compile(r"\]\(([^)\s]+)\)")
NAMED = re.compile(r"(?<![\w./~$-])((?:\.\./)+[\w.-][\w./-]*|(?:" + "|".join(TOP) + r")/[\w./-]*)")
PLACEHOLDER = re.compile(r"[<>*{}]|\.\.\.|\b(?:NAME|PATH|RECIPE)\b")
#: a recipe named relative to the doc (recipes/README.md's table), `{a,b}` expanded
RECIPE = re.compile(r"`([\w.-]+/[\w./{},-]+\.yaml)`")


def expand(text: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", text)
    if not match:
        return [text]
    return [
        x for part in match.group(1).split(",") for x in expand(text[: match.start()] + part + text[match.end() :])
    ]


def cited(doc: Path, text: str | None = None):
    """(line number, path as written, resolved path) for each path `doc` cites."""
    text = doc.read_text(encoding="utf-8") if text is None else text
    for number, line in enumerate(text.splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL, an anchor in the same doc
            path = target.split("#")[0]
            yield number, target, (doc.parent / path).resolve()
        for match in NAMED.finditer(line):
            text = match.group(1).rstrip(".,:;")
            after = line[match.end() : match.end() + 1]
            if PLACEHOLDER.search(text) or after in "<*{" and after:
                continue  # a pattern such as recipes/<model>/dmpo/<task>.yaml
            base = doc.parent if text.startswith("../") else ROOT
            yield number, text, (base / text).resolve()
        for match in RECIPE.finditer(line):
            if match.group(1).startswith(TOP):
                continue  # named from the root: checked above
            for path in expand(match.group(1)):
                yield number, path, (doc.parent / path).resolve()


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_cited_path_exists(doc):
    missing = [
        f"{doc.relative_to(ROOT)}:{number}: {text}"
        for number, text, path in cited(doc)
        if not path.exists() or not path.is_relative_to(ROOT)
    ]
    assert not missing, "\n".join(missing)


def test_the_check_sees_links_and_named_paths():
    line = (
        "[a](launching.md#x) `dmpo_trl/cli/train.py`, ../missing/SPEC.md and recipes/<model>/x.yaml, "
        "`dmpo_trl/cli/accelerate_configs/NAME.yaml`, `m/dmpo/{a,b}.yaml`"
    )
    found = [text for _, text, _ in cited(ROOT / "recipes" / "README.md", line)]
    assert found == ["launching.md#x", "dmpo_trl/cli/train.py", "../missing/SPEC.md", "m/dmpo/a.yaml", "m/dmpo/b.yaml"]
