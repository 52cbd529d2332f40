"""docs/dataset_format.md runs as written: its Python blocks print the JSON shown after them, and its `dmpo-trl`
commands print the output shown (and write the example files committed in docs/examples/)."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import re
import shlex

import pytest

from dmpo_trl.cli import main as cli_main


ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "dataset_format.md"


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def python_cases():
    found = blocks()
    for i, (lang, code) in enumerate(found):
        if lang == "python":
            following = found[i + 1] if i + 1 < len(found) else ("", "")
            yield pytest.param(code, following[1] if following[0] == "json" else None, id=f"block{i}")


@pytest.mark.parametrize("code, expected_json", list(python_cases()))
def test_python_blocks_print_what_the_doc_shows(code, expected_json):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {"__name__": "__doc_snippet__"})
    if expected_json is not None:
        assert json.loads(out.getvalue()) == json.loads(expected_json)


def console_sessions() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each `$ ` line of the console blocks."""
    sessions: list[tuple[str, list[str]]] = []
    for lang, text in blocks():
        if lang != "console":
            continue
        for line in text.splitlines():
            if line.startswith("$ "):
                sessions.append((line[2:], []))
            else:
                sessions[-1][1].append(line)
    return sessions


@pytest.mark.slow
def test_console_commands_print_what_the_doc_shows(tmp_path, capsys, monkeypatch):
    from dmpo_trl.models import gguf_source

    monkeypatch.chdir(ROOT)
    env = {"SMOLLM2_GGUF": str(gguf_source())}
    sessions = console_sessions()
    assert any(cmd.startswith("dmpo-trl validate") for cmd, _ in sessions)
    for command, expected in sessions:
        if command.startswith("export "):
            assert command.split("=", 1)[0] == "export SMOLLM2_GGUF"
            continue
        argv = shlex.split(command.replace('"$SMOLLM2_GGUF"', shlex.quote(env["SMOLLM2_GGUF"])))
        assert argv[0] == "dmpo-trl"
        argv = argv[1:]
        written = None
        if argv[0] == "convert":  # write to a temporary file, then compare with the committed one
            written = argv[-1]
            argv[-1] = str(tmp_path / pathlib.Path(written).name)
        cli_main(argv)
        captured = capsys.readouterr()
        output = (captured.out + captured.err).replace("\r", "\n")
        if written is not None:
            output = output.replace(argv[-1], written)
            assert pathlib.Path(argv[-1]).read_text() == (ROOT / written).read_text()
        lines = [line for line in output.splitlines() if line.strip() and not line.lstrip().startswith("Validating:")]
        assert lines == expected, command
