"""Print the template table of docs/dmpo_trainer.md: every chat template TRL ships, how DMPO finds its actions.

    .venv/bin/python scripts/template_table.py

For each `trl/chat_templates/*.jinja`, `dmpo_trl.testing.template_survey` tokenizes a 3-action trajectory with a
tool call (and the same trajectory as text) with a tiny tokenizer carrying the template's special tokens; the table
gives the path (generation markers or prefix rendering), the action layout (what precedes the content inside an
action, and the end-of-turn token) or the refusal. tests/core/rows/test_templates.py checks every cell token for token;
tests/docs/test_template_table.py checks that the docs hold this script's output.
"""

from __future__ import annotations

import os
import re
import sys


sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

REFUSALS = (
    ("breaks the prefix property", "refused: re-renders earlier turns (no prefix property); use the `_training` one"),
    ("Conversation roles must alternate", "refused by the template: no `tool` role"),
    ("System role not supported", "refused by the template: no `system` role"),
    ("is empty", "refused: the template drops `tool_calls`"),
    ("can only concatenate str", "refused by the template: tool-call arguments must be JSON strings"),
    ("has no element 0", "refused: vision template (content must be a list of parts)"),
    ("has no attribute 'text'", "refused: vision template (content must be a list of parts)"),
    ("does not render the content", "refused: vision template (renders only content parts)"),
)


def code(text: str) -> str:
    """A code span for a table cell (newlines shown as ``\\n``, pipes escaped for the table)."""
    return "`" + text.replace("\n", "\\n").replace("|", "\\|") + "`"


def layout(action: str, content: str) -> str:
    """``pre + content + end`` of one text action, for the table."""
    pre, _, end = action.partition(content)
    return " + ".join([*([code(pre)] if pre else []), "content", code(end)])


def cell(result, contents: list[str] | None) -> str:
    if isinstance(result, str):
        return next((text for phrase, text in REFUSALS if phrase in result), f"refused: {result[:80]}")
    if contents is None:  # the tool trajectory: how the tool-call action ends (its trailing tags)
        return "ok; the tool call ends " + code(re.search(r"(<[^<>]+>)+$", result[0]).group(0))
    layouts = sorted({layout(a, c) for a, c in zip(result, contents, strict=True)}, key=len)
    return "ok; " + "; the last: ".join(layouts)


def table() -> str:
    from dmpo_trl.testing import TABLE_TEXT_TRAJECTORY, TEMPLATE_DIR, template_survey

    contents = [m["content"] for m in TABLE_TEXT_TRAJECTORY if m["role"] == "assistant"]
    rows = [
        "| template | path | 3 actions with a tool call | 3 text actions (observations as user messages) |",
        "| --- | --- | --- | --- |",
    ]
    for path in sorted(TEMPLATE_DIR.glob("*.jinja")):
        survey = template_survey(path.name)
        system = "" if survey["system"] else " (no system message)"
        rows.append(
            f"| `{path.name}` | {survey['path']} | {cell(survey['tool'], None)} | "
            f"{cell(survey['text'], contents)}{system} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
