"""Every time the README quotes comes with its CPU-seconds and the load it ran under, the test suite's duration is
stated, and the README says that wall time grows with load."""

import re
from pathlib import Path


README = Path(__file__).resolve().parents[2] / "README.md"
TIME = re.compile(r"\b\d+ (?:min|h)\b(?: \d+ s\b)?")


def paragraphs(text: str) -> list[str]:
    """Prose paragraphs (code blocks and tables left out), each on one line."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    blocks = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
    return [block for block in blocks if block and not block.startswith(("|", "#"))]


def test_every_quoted_time_has_cpu_seconds_and_load():
    timed = [p for p in paragraphs(README.read_text(encoding="utf-8")) if TIME.search(p)]
    assert timed  # at least the suite's duration; every other quoted time (main job, experiment) too
    for paragraph in timed:
        assert "CPU-seconds" in paragraph and re.search(r"\bload\b", paragraph), paragraph[:300]


def test_suite_duration_and_load_sentence():
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert re.search(r"The suite without them takes about \d+ min wall", text)
    assert "Every wall time in this README grows with the load" in text
