"""Re-run the examples of a docs page and paste their real output back into it.

    python docs/update_outputs.py docs/dataset_format.md

- a ```python block followed by a ```json block: the JSON block becomes what the Python block prints;
- a ```console block: each `$ dmpo-trl ...` line is run (in bash, from the repo root; `$ export ...` lines set
  variables for the later ones) and the lines after it become its output (stdout and stderr, progress bars
  left out).

`tests/docs/test_dataset_format_doc.py` checks that the page matches what these commands print.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import subprocess
import sys


ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(\w+)\n(.*?)```", flags=re.S)


def run_python(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<doc>", "exec"), {"__name__": "__doc_snippet__"})
    return out.getvalue()


def run_console(text: str) -> str:
    env = dict(os.environ, PATH=f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    prefix = 'dmpo-trl() { python -m dmpo_trl.cli "$@"; }\n'
    lines = []
    for command in (line[2:] for line in text.splitlines() if line.startswith("$ ")):
        lines.append(f"$ {command}")
        if command.startswith("export "):
            prefix += command + "\n"
            continue
        result = subprocess.run(
            ["bash", "-c", f"{prefix}{command} 2>&1"], capture_output=True, text=True, env=env, cwd=ROOT
        )
        output = result.stdout.replace("\r", "\n").splitlines()
        lines += [line for line in output if line.strip() and not line.lstrip().startswith("Validating:")]
    return "\n".join(lines) + "\n"


def update(path: pathlib.Path) -> None:
    text = path.read_text(encoding="utf-8")
    blocks = list(BLOCK.finditer(text))
    pieces, last = [], 0
    for i, block in enumerate(blocks):
        lang, body = block.group(1), block.group(2)
        previous = blocks[i - 1] if i else None
        if lang == "json" and previous is not None and previous.group(1) == "python":
            new_body = run_python(previous.group(2)).rstrip() + "\n"
        elif lang == "console":
            new_body = run_console(body)
        else:
            continue
        pieces += [text[last : block.start(2)], new_body]
        last = block.end(2)
    path.write_text("".join(pieces) + text[last:], encoding="utf-8")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    for name in sys.argv[1:] or ["docs/dataset_format.md"]:
        update(pathlib.Path(name))
