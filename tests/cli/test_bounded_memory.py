"""`dmpo-trl convert` and `dmpo-trl validate` stream their rows: the memory they hold does not grow with the file.

One fresh interpreter per command writes inputs of N and 4N rows, runs the command once to import everything and
load the tokenizer, then measures, for each input, the peak of Python's allocations (`tracemalloc`) above what was
allocated before the command. Four times the rows must not cost more than a small constant (1 MB for convert,
256 kB for validate): a command that holds its rows grows by kilobytes per row (11 MB and 4 MB before streaming).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli.helpers import subprocess_env


SCRIPT = r"""
import json, sys, tracemalloc
from pathlib import Path

command, n, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
from dmpo_trl.testing import dataset_rows, make_tokenizer
from dmpo_trl.cli import main

rows = dataset_rows(8)


def write(path, count):
    with path.open("w") as handle:
        for i in range(count):
            row = dict(rows[i % 8], id=f"pair-{i}")
            if command == "convert":  # ShareGPT: a conversation, then the two final answers
                row = {"conversations": [{"from": "human", "value": f"task {i}: find the coin"}],
                       "chosen": {"from": "gpt", "value": f"take coin {i}"},
                       "rejected": {"from": "gpt", "value": f"wait {i}"}, "id": i}
            handle.write(json.dumps(row) + "\n")


def argv(path):
    if command == "convert":
        return ["convert", "--from", "sharegpt", str(path), str(path.with_suffix(".out.jsonl"))]
    return ["validate", str(path), "--model", str(folder / "tok"), "--json"]


make_tokenizer("qwen2_5").save_pretrained(folder / "tok")
for count in (1, n, 4 * n):
    path = folder / f"in-{count}.jsonl"
    write(path, count)
    if count == 1:  # warm: imports, the tokenizer loaded and cached
        assert main(argv(path)) == 0
        continue
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    code = main(argv(path))
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    print("PEAK", count, code, peak, file=sys.stderr)
"""


def peaks(tmp_path, command: str, n: int) -> dict[int, int]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, command, str(n), str(tmp_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    found = {}
    for line in proc.stderr.splitlines():
        if line.startswith("PEAK "):
            _, count, code, peak = line.split()
            assert code == "0", proc.stderr[-2000:]
            found[int(count)] = int(peak)
    assert len(found) == 2, proc.stderr[-2000:]
    if command == "convert":
        out = [json.loads(x) for x in (tmp_path / f"in-{4 * n}.out.jsonl").read_text().splitlines()]
        assert len(out) == 4 * n and out[-1]["id"] == 4 * n - 1
    return found


@pytest.mark.parametrize("command, n, limit", [("convert", 1500, 2**20), ("validate", 100, 2**18)])
def test_memory_does_not_grow_with_the_rows(tmp_path, command, n, limit):
    found = peaks(tmp_path, command, n)
    assert found[4 * n] - found[n] < limit, found
