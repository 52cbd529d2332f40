"""Round trips per input format: exact output messages, and exact action spans after the core's tokenization."""

from __future__ import annotations

import copy
import json

import pytest

from dmpo_trl.cli import main as cli_main
from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.checks import prepare_pair
from dmpo_trl.data.convert import (
    convert,
    from_eto_pairs,
    from_openai,
    from_project,
    from_sharegpt,
    pair_eto_rollouts,
)
from dmpo_trl.data.io import read_records, write_records
from tests.data import records as rec


def action_texts(tokenizer, row: dict) -> dict[str, list[str]]:
    """Per side, the decoded tokens of each action t (the tokens whose turn id is t), as the trainer tokenizes it."""
    out = prepare_pair(tokenizer, row)
    texts = {}
    for side in ("chosen", "rejected"):
        ids, turn_ids = out[f"{side}_ids"], out[f"{side}_turn_ids"]
        texts[side] = [
            tokenizer.decode([i for i, t in zip(ids, turn_ids, strict=True) if t == turn])
            for turn in range(out[f"{side}_num_turns"])
        ]
    return texts


def msg(role: str, content: str, **extra) -> dict:
    return {"role": role, "content": content, **extra}


def call(name: str, arguments: dict | str, **extra) -> dict:
    """A converted tool call: the converters write arguments as a JSON string (it survives Arrow)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"type": "function", "function": {"name": name, "arguments": text}, **extra}


def tools_json(*functions: dict) -> str:
    """Converted tools: the JSON string of the wrapped schemas."""
    return json.dumps([{"type": "function", "function": f} for f in functions])


# ---------------------------------------------------------------------------------------------------------- ETO pairs
def test_eto_pair_exact_messages_and_action_spans(tok):
    record = rec.eto_pair()
    [row] = from_eto_pairs([record])
    assert row == {
        "id": "webshop_1043",
        "prompt": [msg("user", rec.WEBSHOP_INSTRUCTION), msg("assistant", "OK"), msg("user", rec.WEBSHOP_TASK)],
        "chosen": [
            msg("assistant", rec.A1),
            msg("user", rec.O1),
            msg("assistant", rec.A2),
            msg("user", rec.O2),
            msg("assistant", rec.A3),
        ],
        "rejected": [
            msg("assistant", rec.A1),
            msg("user", rec.O1),
            msg("assistant", rec.R1),
            msg("user", rec.RO1),
            msg("assistant", rec.R2),
        ],
    }
    assert record == rec.eto_pair()  # input untouched
    # The "OK" of the prompt is not an action: actions are exactly the gpt messages of chosen / rejected.
    texts = action_texts(tok, row)
    assert texts["chosen"] == [rec.A1 + "<|im_end|>", rec.A2 + "<|im_end|>", rec.A3 + "<|im_end|>"]
    assert texts["rejected"] == [rec.A1 + "<|im_end|>", rec.R1 + "<|im_end|>", rec.R2 + "<|im_end|>"]


def test_eto_pair_keeps_metadata_columns():
    record = {**rec.eto_pair(), "reward": 0.75, "env": "webshop"}
    [row] = from_eto_pairs([record])
    assert (row["id"], row["reward"], row["env"]) == ("webshop_1043", 0.75, "webshop")


# ------------------------------------------------------------------------------------------------------ ETO rollouts
def test_eto_rollouts_pairing_rule_and_counts():
    a = [f"Thought: t{i}.\nAction: click[{i}]" for i in range(12)]
    experts = [
        rec.eto_expert("1", a[:2], reward=1.0),
        rec.eto_expert("2", a[:2], reward=0.5),
        rec.eto_expert("3", a[:1], reward=1.0),
        rec.eto_expert("4", a[:1], reward=1.0),
        rec.eto_expert("5", a[:1], reward=1.0),
    ]
    rollouts = [
        rec.eto_rollout("1", a[2:11], reward=0.0),  # lose: 9 actions, capped at 2 + 5 = 7
        rec.eto_rollout("2", a[5:8], reward=0.75),  # win: the rollout beats the expert (WebShop reward < 1)
        rec.eto_rollout("3", a[3:4], reward=1.0),  # tie: dropped
        rec.eto_rollout("4", a[3:4], reward=None),  # no reward: dropped
        rec.eto_rollout("9", a[3:4], reward=0.0),  # no expert of that id: dropped
        rec.eto_rollout("5", [], reward=0.0, trailing_obs=False),  # rollout has no action: does not end in gpt
    ]
    rows = pair_eto_rollouts(experts, rollouts, rollout_offset=4)
    assert rows.stats == {
        "rollouts": 6,
        "lose": 2,
        "win": 1,
        "tie_dropped": 1,
        "no_reward_dropped": 1,
        "no_expert_dropped": 1,
        "not_ending_in_action_dropped": 1,
        "rejected_capped": 1,
        "expert_reward_assumed": 0,
    }
    lose, win = rows
    instruction = [msg("user", rec.WEBSHOP_INSTRUCTION), msg("assistant", "OK")]
    assert lose["id"] == "1" and lose["prompt"] == instruction + [msg("user", "Task 1")]
    assert [m["content"] for m in lose["chosen"] if m["role"] == "assistant"] == a[:2]
    assert [m["content"] for m in lose["rejected"] if m["role"] == "assistant"] == a[2:9]  # 2 + 5 actions
    assert lose["rejected"][-1]["role"] == "assistant"
    assert (lose["chosen_reward"], lose["rejected_reward"]) == (1.0, 0.0)
    assert win["id"] == "2" and win["prompt"] == instruction + [msg("user", "Task 2")]
    assert [m["content"] for m in win["chosen"] if m["role"] == "assistant"] == a[5:8]
    assert win["chosen"][1] == msg("user", "Observation: rollout 2 step 1")
    assert [m["content"] for m in win["rejected"] if m["role"] == "assistant"] == a[:2]


def test_eto_rollouts_task_presets():
    a = [f"Thought: t{i}.\nAction: look" for i in range(10)]
    # sciworld: offset 16, expert reward fixed at 1.0 (ETO ignores the record's), "Task Description:" stripped
    experts = [rec.eto_expert("7", a[:1], reward=0.2)]
    rollouts = [rec.eto_rollout("7", a[1:3], reward=0.5, offset=16, task_text="Task Description:\nBoil water.")]
    [row] = pair_eto_rollouts(experts, rollouts, task="sciworld")
    assert [m["content"] for m in row["chosen"] if m["role"] == "assistant"] == a[:1]  # 0.5 < 1.0: expert wins
    # webshop: offset 10, expert reward read from the record: here the rollout wins, its task text is the prompt
    rollouts = [rec.eto_rollout("7", a[1:3], reward=0.5, offset=10, task_text="Task Description:\nBoil water.")]
    [row] = pair_eto_rollouts(experts, rollouts, task="webshop")
    assert row["prompt"][-1] == msg("user", "Task Description:\nBoil water.")
    assert [m["content"] for m in row["chosen"] if m["role"] == "assistant"] == a[1:3]
    # sciworld strips the prefix when the rollout's task becomes the prompt
    experts = [rec.eto_expert("7", a[:1])]
    rows = pair_eto_rollouts(
        experts, [rec.eto_rollout("7", a[1:3], 1.0, offset=16)], task="sciworld", expert_reward=0.0
    )
    assert rows[0]["prompt"][-1] == msg("user", "Task 7")
    rollouts = [rec.eto_rollout("7", a[1:3], reward=0.5, offset=16, task_text="Task Description:\nBoil water.")]
    [row] = pair_eto_rollouts(experts, rollouts, task="sciworld", expert_reward=0.0)
    assert row["prompt"][-1] == msg("user", "Boil water.")
    # alfworld: no cap on the rejected length, ids from the game file, boolean rewards
    expert = {**rec.eto_expert("x", a[:1]), "game_file": "json_2.1.1/train/pick_apple/trial_T2019_1"}
    rollout = rec.eto_rollout("ignored", a[1:10], reward=False, offset=12)
    del rollout["id"]
    rollout["meta"]["error"] = "json_2.1.1/train/pick_apple/trial_T2019_1/game.tw-pddl"
    [row] = pair_eto_rollouts([expert], [rollout], task="alfworld")
    assert row["id"] == "trial_T2019_1"
    assert sum(m["role"] == "assistant" for m in row["rejected"]) == 9


def test_eto_rollouts_wrong_offset_is_an_error():
    experts = [rec.eto_expert("1", ["Thought: a.\nAction: b"])]
    rollouts = [rec.eto_rollout("1", ["Thought: c.\nAction: d"], reward=0.0, offset=4)]
    with pytest.raises(DMPODataError, match=r"row 0: rollout: message 5 .* is not the human task description"):
        pair_eto_rollouts(experts, rollouts, rollout_offset=5)


# ----------------------------------------------------------------------------------------------------------- ShareGPT
def test_llamafactory_sharegpt_pair_exact_messages_and_action_spans(tok):
    [row] = from_sharegpt([rec.llamafactory_pair()])
    search = call("search_products", {"query": "clip-in hair extension", "max_price": 40})
    assert row == {
        "prompt": [
            msg("system", "You are a shopping agent."),
            msg("user", "Find me natural clip-in hair extensions under $40."),
            msg("assistant", "", tool_calls=[search]),
            msg("tool", '[{"id": "B09QQLDJ93", "price": 19.99}]', name="search_products"),
        ],
        "chosen": [msg("assistant", "", tool_calls=[call("buy", {"product_id": "B09QQLDJ93"})])],
        "rejected": [msg("assistant", "I could not find anything.")],
        "tools": tools_json(rec.SEARCH_TOOL, rec.BUY_TOOL),
    }
    texts = action_texts(tok, row)
    assert texts["chosen"] == [
        '<tool_call>\n{"name": "buy", "arguments": {"product_id": "B09QQLDJ93"}}\n</tool_call><|im_end|>'
    ]
    assert texts["rejected"] == ["I could not find anything.<|im_end|>"]


def test_sharegpt_multiturn_lists_and_wild_roles(tok):
    record = {
        "prompt": [rec.fc("System", "Be brief."), rec.fc("user", "Task: take the coin.")],
        "chosen": [
            rec.fc("gpt", "Action: look"),
            rec.fc("observation", "Observation: a coin."),
            rec.fc("chatgpt", "Action: take coin"),
        ],
        "rejected": [rec.fc("assistant", "Action: sleep")],
        "source": "wild",
    }
    [row] = from_sharegpt([record])
    assert row == {
        "source": "wild",
        "prompt": [msg("system", "Be brief."), msg("user", "Task: take the coin.")],
        "chosen": [
            msg("assistant", "Action: look"),
            msg("tool", "Observation: a coin."),
            msg("assistant", "Action: take coin"),
        ],
        "rejected": [msg("assistant", "Action: sleep")],
    }
    texts = action_texts(tok, row)
    assert texts == {
        "chosen": ["Action: look<|im_end|>", "Action: take coin<|im_end|>"],
        "rejected": ["Action: sleep<|im_end|>"],
    }


def test_sharegpt_full_conversations_split_at_first_difference():
    shared = [
        rec.fc("human", "Task: open the door."),
        rec.fc("gpt", "Action: go north"),
        rec.fc("human", "Obs: a door"),
    ]
    record = {
        "chosen": shared + [rec.fc("gpt", "Action: open door")],
        "rejected": shared
        + [rec.fc("gpt", "Action: go south"), rec.fc("human", "Obs: a wall"), rec.fc("gpt", "Action: wait")],
    }
    rows = from_sharegpt([record])
    assert rows[0]["prompt"] == [
        msg("user", "Task: open the door."),
        msg("assistant", "Action: go north"),
        msg("user", "Obs: a door"),
    ]
    assert rows[0]["chosen"] == [msg("assistant", "Action: open door")]
    assert [m["content"] for m in rows[0]["rejected"]] == ["Action: go south", "Obs: a wall", "Action: wait"]
    assert rows.stats == {"implicit_prompt_rows": 1, "implicit_prompt_with_assistant": 1}


# ------------------------------------------------------------------------------------------------------------- OpenAI
def test_openai_full_conversations_with_tool_calls(tok):
    chosen, rejected = rec.openai_conversations()
    record = {
        "chosen": chosen,
        "rejected": rejected,
        "tools": [{"type": "function", "function": rec.SEARCH_TOOL}, {"type": "function", "function": rec.BUY_TOOL}],
    }
    [row] = from_openai([copy.deepcopy(record)])
    search = call("search_products", {"query": "clip-in hair extension", "max_price": 40}, id="call_1")
    buy = call("buy", {"product_id": "B09QQLDJ93"}, id="call_2")
    assert row["prompt"] == [
        msg("system", "You are a shopping agent."),
        msg("user", "Find me clip-in hair extensions\nunder $40."),
    ]
    assert row["chosen"] == [
        msg("assistant", "", tool_calls=[search]),
        msg("tool", '[{"id": "B09QQLDJ93", "price": 19.99}]', name="search_products", tool_call_id="call_1"),
        msg("assistant", "", tool_calls=[buy]),
        msg("tool", "order placed", name="buy", tool_call_id="call_2"),
        msg("assistant", "I bought B09QQLDJ93 for $19.99."),
    ]
    assert row["rejected"] == [
        msg("assistant", "Let me search.", tool_calls=[call("search_products", {"query": "hair"}, id="call_9")]),
        msg("tool", "[]", name="search_products", tool_call_id="call_9"),
        msg("assistant", "Nothing found."),
    ]
    assert row["tools"] == json.dumps(record["tools"])
    texts = action_texts(tok, row)
    assert texts["chosen"] == [
        '<tool_call>\n{"name": "search_products", "arguments": {"query": "clip-in hair extension", "max_price": 40}}'
        "\n</tool_call><|im_end|>",
        '<tool_call>\n{"name": "buy", "arguments": {"product_id": "B09QQLDJ93"}}\n</tool_call><|im_end|>',
        "I bought B09QQLDJ93 for $19.99.<|im_end|>",
    ]
    assert texts["rejected"] == [
        'Let me search.\n<tool_call>\n{"name": "search_products", "arguments": {"query": "hair"}}\n</tool_call>'
        "<|im_end|>",
        "Nothing found.<|im_end|>",
    ]


def test_openai_preference_finetuning_format_and_legacy_functions():
    record = {
        "input": {
            "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
            "tools": [{"type": "function", "function": {"name": "calc", "parameters": {}}}],
        },
        "preferred_output": [
            {"role": "assistant", "content": None, "function_call": {"name": "calc", "arguments": '{"expr": "2+2"}'}},
            {"role": "function", "name": "calc", "content": "4"},
            {"role": "assistant", "content": "4"},
        ],
        "non_preferred_output": [{"role": "assistant", "content": "5"}],
    }
    [row] = from_openai([record])
    assert row == {
        "prompt": [msg("system", "Be brief."), msg("user", "2+2?")],
        "chosen": [
            msg("assistant", "", tool_calls=[call("calc", '{"expr": "2+2"}')]),
            msg("tool", "4", name="calc"),
            msg("assistant", "4"),
        ],
        "rejected": [msg("assistant", "5")],
        "tools": tools_json({"name": "calc", "parameters": {}}),
    }


def test_openai_explicit_prompt_and_messages_alias():
    prompt = [{"role": "user", "content": "hi"}]
    side = [{"role": "assistant", "content": "hello"}]
    other = [{"role": "assistant", "content": "go away"}]
    for key in ("prompt", "messages"):
        [row] = from_openai([{key: prompt, "chosen": side, "rejected": other, "score": 3}])
        assert row == {"score": 3, "prompt": prompt, "chosen": side, "rejected": other}


# --------------------------------------------------------------------------------------------------- project / convert
def test_project_format_passes_through_unchanged(tok):
    from dmpo_trl.testing import agent_pair

    rows_in = [
        agent_pair(2, 3),
        {**agent_pair(1, 1), "tools": [{"type": "function", "function": rec.BUY_TOOL}], "env": "alfworld", "seed": 3},
    ]
    rows_out = from_project(copy.deepcopy(rows_in))
    assert list(rows_out) == rows_in and rows_out.skipped == []
    assert convert(copy.deepcopy(rows_in), "project") == rows_in


def test_skip_invalid_lists_reasons_and_keeps_good_rows():
    bad = {**rec.eto_pair(), "chosen": []}
    rows = from_eto_pairs([rec.eto_pair(), bad, rec.eto_pair()], skip_invalid=True)
    assert len(rows) == 2
    assert [(s.row, s.reason) for s in rows.skipped] == [
        (1, "row 1, chosen: empty chosen: the chosen continuation has no messages (id='webshop_1043')")
    ]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_files_round_trip(tmp_path, suffix):
    [row] = from_sharegpt([rec.llamafactory_pair()])
    rows = [row, from_eto_pairs([rec.eto_pair()])[0]]
    path = tmp_path / f"data{suffix}"
    write_records(rows, path)
    assert read_records(path) == rows


def test_cli_convert_each_format(tmp_path, capsys):
    inputs = {
        "eto": [rec.eto_pair()],
        "sharegpt": [rec.llamafactory_pair()],
        "openai": [dict(zip(("chosen", "rejected"), rec.openai_conversations(), strict=True))],
    }
    for fmt, records in inputs.items():
        src, dst = tmp_path / f"{fmt}.json", tmp_path / f"{fmt}_out.jsonl"
        src.write_text(json.dumps(records))
        assert cli_main(["convert", "--from", fmt, str(src), str(dst)]) == 0
        assert read_records(dst) == list(convert(records, fmt))
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["written"] == 1 and summary["skipped"] == 0


def test_cli_convert_eto_rollouts_from_a_folder(tmp_path, capsys):
    a = [f"Thought: t{i}.\nAction: click[{i}]" for i in range(4)]
    (tmp_path / "webshop_sft.json").write_text(json.dumps([rec.eto_expert("12", a[:2], reward=1.0)]))
    rollout_dir = tmp_path / "outputs" / "model" / "webshop"
    rollout_dir.mkdir(parents=True)
    rollout = rec.eto_rollout("12", a[2:4], reward=0.25, offset=10)
    del rollout["id"]  # ETO names the file after the task id
    (rollout_dir / "12.json").write_text(json.dumps(rollout))
    out = tmp_path / "pm.json"
    code = cli_main(
        [
            "convert",
            "--from",
            "eto-rollouts",
            "--expert",
            str(tmp_path / "webshop_sft.json"),
            "--task",
            "webshop",
            str(rollout_dir),
            str(out),
        ]
    )
    assert code == 0
    [row] = read_records(out)
    assert row["id"] == "12" and row["rejected_reward"] == 0.25
    summary = json.loads(capsys.readouterr().out)
    assert (summary["written"], summary["lose"], summary["tie_dropped"]) == (1, 1, 0)


def test_cli_convert_reports_the_bad_row(tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(rec.eto_pair()) + "\n" + json.dumps({**rec.eto_pair(), "rejected": "oops"}) + "\n")
    assert cli_main(["convert", "--from", "eto", str(src), str(tmp_path / "o.json")]) == 1
    err = capsys.readouterr().err
    assert "row 1, rejected: 'rejected' must be a list of {from, value} messages, got str" in err
    assert cli_main(["convert", "--from", "eto", "--skip-invalid", str(src), str(tmp_path / "o.json")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["skipped"] == 1 and f"skipped {src}: row 1, rejected" in captured.err
    assert len(read_records(tmp_path / "o.json")) == 1
