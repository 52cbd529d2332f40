"""The hostile-input suite: every case of docs/bad_input.md, run as the command its table shows, prints exactly the
line the table shows and exits with its code; and what is trained is what was written.

Each case writes its files into a fresh folder (the working directory, with `tiny/`, a tiny model, and
`recipe.yaml`, a one-step CPU recipe on `data.jsonl`), runs the documented command in this process, and compares
stderr's last line (the working directory written as ``<cwd>``). Cases that concern files run through
`validate`, `convert` and `train` alike and must say the same thing in all three.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from dmpo_trl.cli import main as cli_main
from dmpo_trl.data.io import read_records, write_records
from dmpo_trl.testing import agent_pair
from tests.cli.helpers import REPO_ROOT, base_recipe, make_workspace
from tests.data import records as rec


DOC = REPO_ROOT / "docs" / "bad_input.md"
CASES: dict[str, Callable] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn

    return register


def doc_table() -> dict[str, tuple[str, int, str]]:
    """case -> (command, exit code, what it prints) from the table of docs/bad_input.md."""
    table = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| ") or line.startswith(("| case ", "|---")):
            continue
        name, command, code, message = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        table[name] = (_code_span(command), int(code), _code_span(message))
    return table


def _code_span(cell: str) -> str:
    match = re.fullmatch(r"``\s?(.*?)\s?``|`(.*?)`", cell)
    return (match.group(1) if match.group(1) is not None else match.group(2)) if match else cell


TABLE = doc_table()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("shared"), n_rows=3)


class Runner:
    def __init__(self, cwd: Path):
        self.cwd = cwd

    def __call__(self, command: str) -> tuple[int, str, str]:
        """(exit code, last stderr line with the cwd as <cwd>, stdout) of `dmpo-trl ...` run in this process."""
        argv = shlex.split(command)
        assert argv[0] == "dmpo-trl"
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli_main(argv[1:])
            except Exception as exc:  # --debug: the traceback, whose last line names the error
                code = 1
                print(f"{type(exc).__module__}.{type(exc).__name__}: {exc}", file=err)
        lines = [line for line in err.getvalue().splitlines() if line.startswith(("dmpo-trl", "dmpo_trl."))]
        return code, (lines[-1] if lines else "").replace(str(self.cwd), "<cwd>"), out.getvalue()

    def same_in_all(self, data: str, expected_tail: str) -> None:
        """`convert` and `train` say about `data` what `validate` says (after their own name)."""
        for command in (
            f"dmpo-trl convert --from project {data} out.jsonl",
            f"dmpo-trl train --config recipe.yaml --data_files {data}",
        ):
            code, line, _ = self(command)
            name = command.split()[1]
            assert (code, line) == (1, f"dmpo-trl {name}: {expected_tail}"), command


@pytest.mark.parametrize("name", sorted(TABLE))
def test_documented_case(name, shared, tmp_path, monkeypatch):
    assert name in CASES, f"docs/bad_input.md lists {name!r}, which this suite does not run"
    command, code, message = TABLE[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").symlink_to(shared["model"])
    recipe = base_recipe({"model": Path("tiny"), "data": Path("data.jsonl")}, output_dir="out", max_steps=1)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    write_records(read_records(shared["data"]), tmp_path / "data.jsonl")
    run = Runner(tmp_path)
    check = CASES[name](tmp_path)
    got_code, line, out = run(command)
    assert got_code == code, (command, line)
    if code != 0:
        assert line == message, command
    else:
        assert line == "", line  # nothing printed as an error
    if check is not None:
        check(run, out)


def test_every_case_is_documented():
    assert sorted(CASES) == sorted(TABLE)


def good(i: int = 0) -> dict:
    return agent_pair(1 + i % 3, 2 + i % 2)


def lines(*rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def tokens_of(run: Runner, data: str, *flags: str) -> list[dict]:
    """validate's per-row token counts for `data`."""
    code, line, out = run(f"dmpo-trl validate {data} --model tiny --json --per-row {' '.join(flags)}")
    assert code == 0, line
    return json.loads(out)["per_row"]


# ------------------------------------------------------------------------------------------------ files
@case("empty file")
def _(d):
    (d / "empty.jsonl").write_text("")
    return lambda run, out: run.same_in_all("empty.jsonl", "empty.jsonl: is empty")


@case("blank lines only")
def _(d):
    (d / "blank.jsonl").write_text("\n  \n\n")
    return lambda run, out: run.same_in_all("blank.jsonl", "blank.jsonl: holds no records")


@case("empty list")
def _(d):
    (d / "empty.json").write_text("[]")
    return lambda run, out: run.same_in_all("empty.json", "empty.json: holds no records")


@case("zero-row Parquet")
def _(d):
    Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}).to_parquet(str(d / "zero.parquet"))
    return lambda run, out: run.same_in_all("zero.parquet", "zero.parquet: holds no records")


@case("folder without data files")
def _(d):
    (d / "pairs").mkdir()
    (d / "pairs" / "README.txt").write_text("nothing here")
    return lambda run, out: run.same_in_all("pairs", "pairs: the folder holds no .json, .jsonl, .parquet files")


@case("folder of JSONL files")
def _(d):
    (d / "pairs").mkdir()
    write_records([good(0), good(1)], d / "pairs" / "a.jsonl")
    write_records([good(2)], d / "pairs" / "b.jsonl")

    def check(run, out):
        assert json.loads(out)["pairs"] == 3
        code, line, _ = run("dmpo-trl train --config recipe.yaml --data_files pairs")
        assert (code, line) == (0, "")
        assert (d / "out" / "adapter_config.json").exists() or (d / "out" / "model.safetensors").exists()

    return check


@case("missing data path")
def _(d):
    return lambda run, out: run.same_in_all("nope.jsonl", "data file 'nope.jsonl' does not exist")


@case("not JSON")
def _(d):
    (d / "pairs.jsonl").write_text("prompt,chosen,rejected\nfind the coin,take coin,wait\n")
    return lambda run, out: run.same_in_all(
        "pairs.jsonl", "pairs.jsonl: line 1, column 1: not valid JSON (Expecting value)"
    )


@case("one broken JSONL line")
def _(d):
    (d / "pairs.jsonl").write_text(lines(good(0), good(1)) + '{"prompt": [}\n' + lines(good(2)))
    return lambda run, out: run.same_in_all(
        "pairs.jsonl", "pairs.jsonl: line 3, column 13: not valid JSON (Expecting value)"
    )


@case("one object instead of a list")
def _(d):
    (d / "pair.json").write_text(json.dumps(good()))
    return lambda run, out: run.same_in_all(
        "pair.json",
        "pair.json: holds one JSON object, not a list of records: wrap it in [...] (or write one record per line to "
        "a .jsonl file)",
    )


@case("a JSONL line holding a list")
def _(d):
    (d / "pairs.jsonl").write_text(lines(good(0)) + json.dumps([good(1), good(2)]) + "\n")
    return lambda run, out: run.same_in_all(
        "pairs.jsonl",
        "pairs.jsonl: line 2 holds a JSON list, not a record (an object); write one record per line",
    )


@case("not UTF-8")
def _(d):
    latin = lines(good(1)).replace("Task", "Tâche").encode("latin-1")
    (d / "pairs.jsonl").write_bytes(lines(good(0)).encode() + latin)
    return lambda run, out: run.same_in_all(
        "pairs.jsonl",
        "pairs.jsonl: line 2: not UTF-8 text (byte 0xe2 cannot be decoded); re-encode the file as UTF-8, e.g. "
        "`iconv -f latin1 -t utf-8`",
    )


@case("byte-order mark")
def _(d):
    rows = [good(0), good(1)]
    (d / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + lines(*rows).encode())
    write_records(rows, d / "plain.jsonl")

    def check(run, out):
        assert tokens_of(run, "bom.jsonl") == [{**r, "file": "bom.jsonl"} for r in tokens_of(run, "plain.jsonl")]
        assert run("dmpo-trl convert --from project bom.jsonl o.jsonl")[0] == 0
        assert read_records(d / "o.jsonl") == rows

    return check


@case("missing column")
def _(d):
    write_records([good(0), {k: v for k, v in good(1).items() if k != "rejected"}], d / "pairs.jsonl")
    return lambda run, out: run.same_in_all(
        "pairs.jsonl", "pairs.jsonl: row 1, rejected: missing 'rejected': a pair needs 'chosen' and 'rejected'"
    )


@case("raw ETO file given to train")
def _(d):
    (d / "webshop_pm.json").write_text(json.dumps([rec.eto_pair()]))
    return lambda run, out: run.same_in_all(
        "webshop_pm.json",
        "webshop_pm.json: row 0, prompt: message 0 has 'from'/'value' keys (FastChat / ShareGPT, as in ETO's files) "
        "instead of 'role'/'content': convert the file first, `dmpo-trl convert --from eto IN OUT` (or --from "
        "sharegpt) (id='webshop_1043')",
    )


@case("ETO message with content instead of value")
def _(d):
    record = rec.eto_pair()
    record["chosen"][0] = {"from": "gpt", "content": rec.A1}
    (d / "webshop_pm.json").write_text(json.dumps([record]))


# ------------------------------------------------------------------------------------------------ rows
@case("duplicate ids and extra columns")
def _(d):
    rows = [{**good(0), "id": 7, "reward": 1.0}, {**good(1), "id": 7, "notes": {"by": "me"}}, {**good(2), "id": "x"}]
    write_records(rows, d / "pairs.jsonl")

    def check(run, out):
        assert json.loads(out)["pairs"] == 3  # nothing dropped: ids are metadata
        assert run("dmpo-trl train --config recipe.yaml --data_files pairs.jsonl")[:2] == (0, "")

    return check


@case("5 MB message")
def _(d):
    row = good(2)
    row["chosen"][1]["content"] = "Observation: " + "a long page of text " * 262_144  # 5 MiB
    write_records([row], d / "big.jsonl")
    assert (d / "big.jsonl").stat().st_size > 5 * 2**20

    def check(run, out):
        report = json.loads(out)
        # the observation after action 0 does not fit max_length=1024: the actions after it are dropped, counted
        assert (report["pairs"], report["pairs_truncated"], report["actions_dropped"]) == (1, 1, 2)

    return check


@case("emoji and right-to-left text")
def _(d):
    row = agent_pair(2, 1)
    row["prompt"][-1]["content"] = "Task: find the 🪙 — ابحث عن العملة"
    row["chosen"][0]["content"] = "Thought: עברית 😀 and العربية.\nAction: take 🪙"
    write_records([row], d / "pairs.jsonl")

    def check(run, out):
        from dmpo_trl.core.rows.checks import prepare_pair
        from dmpo_trl.data.loading import load_preference_files
        from dmpo_trl.testing import make_tokenizer

        tok = make_tokenizer("qwen2_5")
        [loaded] = list(load_preference_files(["pairs.jsonl"]).dataset)
        out_row = prepare_pair(tok, loaded)
        action = [i for i, t in zip(out_row["chosen_ids"], out_row["chosen_turn_ids"], strict=True) if t == 0]
        assert tok.decode(action) == row["chosen"][0]["content"] + "<|im_end|>"

    return check


def tool_pair(args: dict, task: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": task}],
        "chosen": [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "shop", "arguments": args}}],
            },
            {"role": "tool", "content": "done"},
            {"role": "assistant", "content": "Bought it."},
        ],
        "rejected": [{"role": "assistant", "content": "I cannot."}],
    }


@case("Parquet with heterogeneous tool arguments")
def _(d):
    rows = [tool_pair({"query": "red scarf"}, "Find a red scarf."), tool_pair({"id": "B01", "qty": 2}, "Buy B01.")]
    write_records(rows, d / "pairs.jsonl")
    Dataset.from_list(rows).to_parquet(str(d / "merged.parquet"))  # as other tools write it: dicts merged by Arrow

    def check(run, out):
        from dmpo_trl.cli.train import build_trainer, parse_args

        assert run("dmpo-trl convert --from project pairs.jsonl pairs.parquet")[0] == 0
        trained = {}
        for data in ("pairs.jsonl", "pairs.parquet", "merged.parquet"):
            trainer = build_trainer(*parse_args(["--config", "recipe.yaml", "--data_files", data]))
            columns = ("prompt_ids", "chosen_ids", "rejected_ids", "chosen_turn_ids", "rejected_turn_ids")
            trained[data] = [[row[c] for c in columns] for row in trainer.train_dataset]
        assert trained["pairs.parquet"] == trained["merged.parquet"] == trained["pairs.jsonl"]
        assert tokens_of(run, "merged.parquet") == [
            {**r, "file": "merged.parquet"} for r in tokens_of(run, "pairs.jsonl")
        ]
        text = trainer.processing_class.decode(trained["merged.parquet"][1][1])
        assert '"arguments": {"id": "B01", "qty": 2}' in text and "query" not in text  # no invented key

    return check


@case("OpenAI arguments as dict and as string")
def _(d):
    chosen, rejected = rec.openai_conversations()
    as_string = {"chosen": chosen, "rejected": rejected}
    as_dict = copy.deepcopy(as_string)
    for message in as_dict["chosen"] + as_dict["rejected"]:
        for call in message.get("tool_calls") or []:
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    (d / "string.json").write_text(json.dumps([as_string]))
    (d / "dict.json").write_text(json.dumps([as_dict]))

    def check(run, out):
        assert run("dmpo-trl convert --from openai dict.json dict.jsonl")[0] == 0
        assert read_records(d / "string.jsonl") == read_records(d / "dict.jsonl")
        assert tokens_of(run, "string.jsonl", "--chat_template_path", str(QWEN)) == [
            {**r, "file": "string.jsonl"} for r in tokens_of(run, "dict.jsonl", "--chat_template_path", str(QWEN))
        ]

    return check


QWEN = Path(__import__("trl").__file__).parent / "chat_templates" / "qwen2_5.jinja"


@case("tool message without tool_call_id")
def _(d):
    record = {
        "prompt": [{"role": "user", "content": "What is 2+2?"}],
        "chosen": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"type": "function", "function": {"name": "calc", "arguments": '{"expr": "2+2"}'}}],
            },
            {"role": "tool", "content": "4"},
            {"role": "assistant", "content": "4"},
        ],
        "rejected": [{"role": "assistant", "content": "5"}],
    }
    (d / "openai.json").write_text(json.dumps([record]))

    def check(run, out):
        [row] = read_records(d / "openai.jsonl")
        assert row["chosen"][1] == {"role": "tool", "content": "4"}  # kept as written: no name, no id invented

    return check


@case("max_length smaller than the prompt, strict")
def _(d):
    def check(run, out):
        code, line, _ = run("dmpo-trl train --config recipe.yaml --max_length 20 --skip_invalid_pairs false")
        assert code == 1 and line.startswith(
            "dmpo-trl train: data.jsonl: row 0, chosen: no action fits within max_length=20"
        )
        assert line.endswith(
            "(skip_invalid_pairs=False is the strict mode; by default such rows are dropped with a "
            "warning, as DPOTrainer drops rows whose prompt fills max_length)"
        )
        # by default (as DPOTrainer) such rows are dropped, here all of them: nothing is left to train on
        code, line, _ = run("dmpo-trl train --config recipe.yaml --max_length 20")
        assert (
            code == 1
            and line.startswith("dmpo-trl train: all ")
            and "(no action fits within max_length; as DPOTrainer drops them)" in line
        )
        code, line, _ = run("dmpo-trl validate data.jsonl --model tiny --max-length 20")
        assert code == 1 and line.startswith("dmpo-trl validate: data.jsonl: no valid pair: all ")

    return check


@case("truncation leaves the same actions")
def _(d):
    row = agent_pair(3, 3)
    row["rejected"][:2] = copy.deepcopy(row["chosen"][:2])  # the first action and observation are shared
    write_records([row], d / "shared.jsonl")


@case("identical sides")
def _(d):
    row = agent_pair(2, 2)
    row["rejected"] = copy.deepcopy(row["chosen"])
    write_records([good(0), row], d / "pairs.jsonl")


@case("template that drops tool calls")
def _(d):
    (d / "smollm2.jinja").write_text(
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    write_records([tool_pair({"query": "red scarf"}, "Find a red scarf.")], d / "tools.jsonl")

    def check(run, out):
        code, line, _ = run(
            "dmpo-trl train --config recipe.yaml --data_files tools.jsonl --chat_template_path smollm2.jinja"
        )
        assert code == 1 and line.startswith(
            "dmpo-trl train: tools.jsonl: row 0, chosen: the chat template drops tool"
        )
        assert run(f"dmpo-trl validate tools.jsonl --model tiny --chat_template_path {QWEN}")[0] == 0

    return check


@case("all rows skipped")
def _(d):
    write_records([{**good(0), "chosen": []}, {**good(1), "rejected": []}], d / "bad.jsonl")

    def check(run, out):
        first = "bad.jsonl: row 0, chosen: empty chosen: the chosen continuation has no messages"
        code, line, _ = run("dmpo-trl validate bad.jsonl --model tiny --skip-invalid")
        assert (code, line) == (
            1,
            f"dmpo-trl validate: all 2 rows fail the checks and were skipped, nothing is left; the first: {first}",
        )
        code, line, _ = run("dmpo-trl convert --from project --skip-invalid bad.jsonl o.jsonl")
        assert (code, line) == (
            1,
            "dmpo-trl convert: bad.jsonl: no pair to write: 2 rows skipped; nothing was written",
        )
        assert not (d / "o.jsonl").exists()

    return check


@case("all rows skipped after tokenization")
def _(d):
    long_prompt = [agent_pair(1, 1), agent_pair(2, 1)]
    for row in long_prompt:
        row["prompt"][-1]["content"] = "Task: " + "find the coin " * 40
    write_records(long_prompt, d / "long.jsonl")


# ------------------------------------------------------------------------------------------------ recipe, flags, paths
@case("typo'd recipe key")
def _(d):
    recipe = yaml.safe_load((d / "recipe.yaml").read_text())
    recipe["gama"] = recipe.pop("gamma")
    (d / "typo.yaml").write_text(yaml.safe_dump(recipe))


@case("tuning recipe that evaluates on test")
def _(d):
    (d / "tuning.yaml").write_text(yaml.safe_dump({"purpose": "dev", "eval": {"split": "test"}}))


@case("typo'd flag")
def _(d):
    return None


@case("beta -0.5")
def _(d):
    return None


@case("beta 0")
def _(d):
    return None


@case("unwritable output dir")
def _(d):
    (d / "results").write_text("a file where a folder should be")

    def check(run, out):
        code, line, _ = run("dmpo-trl convert --from project data.jsonl results/pairs.jsonl")
        assert code == 1 and line.startswith("dmpo-trl convert: cannot write results/pairs.jsonl (")

    return check


@case("local model path that does not exist")
def _(d):
    def check(run, out):
        code, line, _ = run("dmpo-trl validate data.jsonl --model ./SmolLM2-135M")
        assert (code, line) == (
            1,
            "dmpo-trl validate: model path './SmolLM2-135M' does not exist (looked for <cwd>/SmolLM2-135M); give an "
            "existing folder, a .gguf file, a Hub id (org/name) or 'default' (the embedded SmolLM2-135M-Instruct)",
        )

    return check


@case("a traceback, on request")
def _(d):
    (d / "empty.jsonl").write_text("")

    def check(run, out):
        import os

        from dmpo_trl.core.errors import DMPODataError

        with pytest.raises(DMPODataError, match="empty.jsonl: is empty"):
            cli_main(["validate", "empty.jsonl", "--model", "tiny", "--debug"])
        os.environ["DMPO_TRL_DEBUG"] = "1"
        try:
            with pytest.raises(DMPODataError, match="empty.jsonl: is empty"):
                cli_main(["validate", "empty.jsonl", "--model", "tiny"])
        finally:
            del os.environ["DMPO_TRL_DEBUG"]
        assert run("dmpo-trl validate empty.jsonl --model tiny") == (1, "dmpo-trl validate: empty.jsonl: is empty", "")

    return check


# ------------------------------------------------------------------ issue 21: the last bad inputs named or refused
def _good_line(i: int = 0) -> str:
    return json.dumps(good(i), ensure_ascii=False)


@case("lone surrogate in a row")
def _(d):
    (d / "pairs.jsonl").write_text(
        _good_line() + "\n" + _good_line(1).replace("Observation", "Obs\\ud800ervation", 1) + "\n"
    )
    return lambda run, out: run.same_in_all(
        "pairs.jsonl",
        "pairs.jsonl: line 2: holds a lone surrogate escape ('\\ud800'), which is not text: fix the \\u escape (a pair "
        "\\ud83d\\ude00 is one emoji; half of one is an error)",
    )


@case("JSON nested 50,000 levels deep")
def _(d):
    (d / "deep.jsonl").write_text('{"prompt": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    return lambda run, out: run.same_in_all(
        "deep.jsonl",
        "deep.jsonl: line 1: JSON nested too deeply to read (thousands of levels); no dataset row is nested like that",
    )


@case("UTF-16 file")
def _(d):
    (d / "pairs.jsonl").write_bytes((_good_line() + "\n").encode("utf-16"))
    return lambda run, out: run.same_in_all(
        "pairs.jsonl",
        "pairs.jsonl: is UTF-16 (or UTF-32) text, not UTF-8: re-encode it, e.g. `iconv -f utf-16 -t utf-8 IN > OUT`",
    )


@case("a key twice in one row")
def _(d):
    (d / "pairs.jsonl").write_text(_good_line()[:-1] + ', "rejected": [{"role": "assistant", "content": "x"}]}\n')
    return lambda run, out: run.same_in_all(
        "pairs.jsonl",
        "pairs.jsonl: line 1: the key 'rejected' appears twice in one object (a JSON reader keeps one of them "
        "silently); remove the duplicate",
    )


@case("dangling symlink in a data folder")
def _(d):
    (d / "pairs").mkdir()
    write_records([good(0)], d / "pairs" / "a.jsonl")
    (d / "pairs" / "b.jsonl").symlink_to(d / "pairs" / "gone.jsonl")
    return lambda run, out: run.same_in_all(
        "pairs", "pairs: b.jsonl is a symbolic link to nothing (dangling, or a loop of links): fix or remove it"
    )


def _openai_row(chosen_calls, results) -> dict:
    return {
        "prompt": [{"role": "user", "content": "Add 2 and 2, then double it."}],
        "chosen": [
            {"role": "assistant", "content": "", "tool_calls": chosen_calls},
            *results,
            {"role": "assistant", "content": "8"},
        ],
        "rejected": [{"role": "assistant", "content": "5"}],
    }


def _call(call_id, expr):
    return {"id": call_id, "type": "function", "function": {"name": "calc", "arguments": {"expr": expr}}}


@case("NaN in tool-call arguments")
def _(d):
    row = _openai_row([_call("c1", "2+2")], [{"role": "tool", "tool_call_id": "c1", "content": "4"}])
    text = json.dumps([row]).replace('{"expr": "2+2"}', '{"expr": NaN}')
    (d / "nan.json").write_text(text)

    def check(run, out):
        assert not (d / "nan.jsonl").exists()  # nothing written

    return check


@case("tool result answering no call")
def _(d):
    row = _openai_row([_call("c1", "2+2")], [{"role": "tool", "tool_call_id": "c9", "content": "4"}])
    write_records([row], d / "pairs.jsonl")
    return None


@case("two calls with one id")
def _(d):
    row = _openai_row(
        [_call("c1", "2+2"), _call("c1", "4*2")],
        [
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
            {"role": "tool", "tool_call_id": "c1", "content": "8"},
        ],
    )
    write_records([row], d / "pairs.jsonl")
    return None


@case("template that renders each action twice")
def _(d):
    (d / "twice.jinja").write_text(
        QWEN.read_text().replace(
            "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}",
            "{{- '<|im_start|>' + message.role + '\\n' + message.content + ('\\n' + message.content if message.role == "
            "'assistant' else '') + '<|im_end|>' + '\\n' }}",
        )
    )
    write_records([good(0)], d / "pairs.jsonl")

    def check(run, out):
        code, line, _ = run(
            "dmpo-trl train --config recipe.yaml --data_files pairs.jsonl --chat_template_path twice.jinja"
        )
        assert code == 1 and "renders the content of action 0 (assistant message) more than once" in line

    return check


@case("recipe value of the wrong type")
def _(d):
    (d / "abc.yaml").write_text("model_name_or_path: tiny\ndata_files: [data.jsonl]\nbeta: abc\n")

    def check(run, out):
        code, line, _ = run("dmpo-trl validate --config abc.yaml")
        assert (code, line) == (1, "dmpo-trl validate: abc.yaml: recipe key 'beta': expects a number, got 'abc'")

    return check


@case("data_files a number")
def _(d):
    (d / "five.yaml").write_text("model_name_or_path: tiny\ndata_files: 5\n")
    return None


@case("nested list under lora_target_modules")
def _(d):
    (d / "nested.yaml").write_text(
        "model_name_or_path: tiny\ndata_files: [data.jsonl]\nuse_peft: true\nlora_target_modules: [[q_proj, v_proj]]\n"
    )
    return None


@case("a recipe key twice")
def _(d):
    (d / "twice.yaml").write_text("model_name_or_path: tiny\ndata_files: [data.jsonl]\nbeta: 0.1\nbeta: 0.3\n")
    return None


@case("gamma true")
def _(d):
    (d / "gamma.yaml").write_text("model_name_or_path: tiny\ndata_files: [data.jsonl]\ngamma: true\n")
    return None


@case("validate --config with a key train refuses")
def _(d):
    (d / "typo.yaml").write_text("model_name_or_path: tiny\ndata_files: [data.jsonl]\ngama: 0.5\n")

    def check(run, out):
        code, line, _ = run("dmpo-trl train --config typo.yaml")
        assert (code, line) == (1, "dmpo-trl train: typo.yaml: unknown recipe key(s) 'gama' (did you mean 'gamma'?)")

    return check


@case("pipeline method name with ../")
def _(d):
    (d / "victim").mkdir()
    (d / "victim" / "keep.txt").write_text("mine")
    (d / "evil.yaml").write_text(
        "output_dir: run\nmethods:\n  - {name: dmpo-0.7/../../victim, turn_weighting: dmpo, gamma: 0.7}\n"
    )

    def check(run, out):
        assert (d / "victim" / "keep.txt").read_text() == "mine" and not (d / "run").exists()

    return check


@case("a pipeline recipe key twice")
def _(d):
    (d / "twice.yaml").write_text("output_dir: run\nseeds: [0]\nseeds: [1, 2]\n")

    def check(run, out):
        assert not (d / "run").exists()

    return check


@case("second training on one output folder")
def _(d):
    (d / "out").mkdir()
    holder = {
        "pid": 4242,
        "host": "node-7",
        "command": "dmpo-trl train --config recipe.yaml",
        "started": "2026-12-06 04:00:00 UTC",
    }
    (d / "out" / "_dmpo.lock").write_text(json.dumps(holder))

    def check(run, out):
        assert sorted(p.name for p in (d / "out").iterdir()) == ["_dmpo.lock"]  # the refused run wrote nothing

    return check


@case("hub_token flag")
def _(d):
    def check(run, out):
        import os

        try:
            assert os.environ["HF_TOKEN"] == "hf_NotARealTokenButSecret1234"
            for path in (d / "out").rglob("*"):
                assert not path.is_file() or b"hf_NotARealTokenButSecret1234" not in path.read_bytes(), path
            assert (d / "out" / "training_args.bin").is_file()
        finally:
            os.environ.pop("HF_TOKEN", None)

    return check


@case("Hub unreachable with push_to_hub")
def _(d):
    return None


@case("checkpoint cut by a full disk, then resume")
def _(d):
    (d / "out" / "checkpoint-3").mkdir(parents=True)
    (d / "out" / "checkpoint-3" / "model.safetensors").write_bytes(b"\0" * 16)  # no trainer_state.json

    def check(run, out):
        state = json.loads((d / "out" / "trainer_state.json").read_text())
        assert state["global_step"] == 1  # trained from the start, not from the partial checkpoint

    return check
