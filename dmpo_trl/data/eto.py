"""ETO / FastChat data: preference pairs, and expert trajectories + agent rollouts paired the way ETO does.

ETO (Song et al., 2024, github.com/Yifan-Song793/ETO) and DMPO train on FastChat conversations, lists of
`{"from": "human" | "gpt", "value": str}`. `human` becomes `user`, `gpt` becomes `assistant`. The instruction
and its "OK" reply stay in the prompt; only the `chosen`/`rejected` assistant messages are actions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.checks import check_pair
from dmpo_trl.data.common import ConvertedRows, Row, SkippedRow, convert_rows, metadata


FASTCHAT_ROLES = {"human": "user", "gpt": "assistant"}
UNSET: Any = object()  # "not given": the task preset (or the base default) applies

# From ETO's construct_preference.py: `pred_traj_offset` (messages before the task description in a rollout:
# instruction, "OK" and the in-context example) and the per-task reward/ids rules.
ETO_TASK_PRESETS: dict[str, dict[str, Any]] = {
    "webshop": {"rollout_offset": 10, "max_extra_rejected_turns": 5, "expert_reward": None},
    "sciworld": {
        "rollout_offset": 16,
        "max_extra_rejected_turns": 5,
        "expert_reward": 1.0,
        "strip_task_prefix": "Task Description:\n",
    },
    "alfworld": {
        "rollout_offset": 12,
        "max_extra_rejected_turns": None,
        "expert_reward": 1.0,
        "id_scheme": "alfworld",
    },
}


def fastchat_messages(messages: Any, side: str, row: int | None, where: str = "") -> list[Row]:
    """FastChat `{"from", "value"}` messages as project messages (human -> user, gpt -> assistant)."""
    if not isinstance(messages, list):
        raise DMPODataError(
            f"{where}{side!r} must be a list of {{from, value}} messages, got {type(messages).__name__}", row, side
        )
    result = []
    for i, message in enumerate(messages):
        check_fastchat_keys(message, i, side, row, where)
        role = FASTCHAT_ROLES.get(message["from"])
        if role is None:
            raise DMPODataError(
                f"{where}unknown role {message['from']!r} in message {i} (ETO/FastChat messages use 'human' or "
                "'gpt'; convert other ShareGPT data with --from sharegpt)",
                row,
                side,
            )
        value = message.get("value")
        if not isinstance(value, str):
            raise DMPODataError(
                f"{where}non-text content in message {i}: value is {type(value).__name__} (expected a string)",
                row,
                side,
            )
        result.append({"role": role, "content": value})
    return result


def check_fastchat_keys(message: Any, i: int, side: str, row: int | None, where: str = "") -> None:
    """A FastChat message is a dict with `from` and `value`; name what a message in another format has instead."""
    if isinstance(message, Mapping) and "from" in message and "value" not in message and "content" in message:
        raise DMPODataError(
            f"{where}message {i} has 'content' instead of 'value': FastChat / ETO / ShareGPT messages are "
            "{from, value} (rename the key; messages with 'role'/'content' are the project format or --from openai)",
            row,
            side,
        )
    if not isinstance(message, Mapping) or "from" not in message:
        hint = (
            " (it has 'role': this is the project format or OpenAI's; use --from project or --from openai)"
            if isinstance(message, Mapping) and "role" in message
            else ""
        )
        raise DMPODataError(f"{where}message {i} is not a {{from, value}} dict{hint}", row, side)


def from_eto_pairs(records: Iterable[Any], *, skip_invalid: bool = False, stream: bool = False) -> ConvertedRows:
    """Convert ETO/DMPO preference pairs `{"id", "prompt", "chosen", "rejected"}` to the project format.

    The prompt ([instruction (human), "OK" (gpt), task (human)]) is kept whole, including the "OK" reply as an
    assistant message of the prompt. `id` and any other keys are kept as metadata columns.
    """

    def one(record: Mapping[str, Any], row: int) -> Row:
        for key in ("prompt", "chosen", "rejected"):
            if key not in record:
                raise DMPODataError(f"missing {key!r}: an ETO pair needs 'prompt', 'chosen' and 'rejected'", row, key)
        return {
            **metadata(record, ("prompt", "chosen", "rejected")),
            "prompt": fastchat_messages(record["prompt"], "prompt", row),
            "chosen": fastchat_messages(record["chosen"], "chosen", row),
            "rejected": fastchat_messages(record["rejected"], "rejected", row),
        }

    return convert_rows(records, one, skip_invalid=skip_invalid, stream=stream)


@dataclass
class _Trajectory:
    """One trajectory after the instruction part: `messages[0]` is the task description."""

    index: int
    id: str
    messages: list[dict[str, Any]]
    reward: float | None


def eto_rule(
    reward: float, expert_reward: float, length: int, expert_length: int, max_extra: int | None, unit: int = 1
):
    """ETO's pairing rule for one rollout against the expert trajectory of its task (``construct_preference.py``).

    Returns ``(outcome, kept)``: ``("lose", kept)`` when ``reward < expert_reward`` (chosen = expert, rejected = the
    rollout cut to its first `kept` units: at most the expert's length plus `max_extra` actions, `unit` units per
    action; ``None`` = no cap), ``("win", length)`` when ``reward > expert_reward`` (chosen = the rollout, rejected =
    the expert), ``("tie", 0)`` otherwise (dropped). The one implementation of the rule: `pair_eto_rollouts` (ETO
    files) and `dmpo_trl.envs.explore.pair_with_experts` (explored rollouts) both call it.
    """
    if reward < expert_reward:
        return "lose", length if max_extra is None else min(length, expert_length + unit * max_extra)
    if reward > expert_reward:
        return "win", length
    return "tie", 0


def pair_eto_rollouts(
    experts: Iterable[Any],
    rollouts: Iterable[Any],
    *,
    task: str | None = None,
    rollout_offset: Any = UNSET,
    expert_offset: int = 2,
    max_extra_rejected_turns: Any = UNSET,
    expert_reward: Any = UNSET,
    strip_task_prefix: Any = UNSET,
    id_scheme: Any = UNSET,
    skip_invalid: bool = False,
) -> ConvertedRows:
    """Pair ETO expert (SFT) trajectories with agent rollouts, as ETO's `construct_preference.py` does.

    Reproduces `build_preference` / `build_preference_alfworld` of github.com/Yifan-Song793/ETO
    (`construct_preference.py`): for each rollout with a reward and an expert trajectory of the same id,

    - rollout reward < expert reward ("lose"): chosen = expert, rejected = rollout, the rejected side capped at
      the expert's length plus `max_extra_rejected_turns` actions (ETO: 5 for WebShop/SciWorld, none for
      ALFWorld); the prompt is the expert's instruction + task description;
    - rollout reward > expert reward ("win"): chosen = rollout, rejected = expert, prompt with the rollout's task;
    - equal rewards ("tie"): dropped and counted;
    - a pair whose chosen or rejected does not end with a gpt action is dropped and counted.

    Inputs: expert records `{"id", "conversations", "reward"?}` (ETO's `data/<task>_sft.json`); rollout records
    `{"id", "conversations", "meta": {"reward"}}` (ETO's `outputs/<model>/<task>/<id>.json`; the id is the file
    name, which `dmpo-trl convert` fills in). `expert_offset` messages (instruction, "OK") precede the task in an
    expert trajectory, `rollout_offset` in a rollout (instruction, "OK", in-context example); a trailing human
    message of a rollout is removed. `expert_reward=None` reads the expert record's `reward` (1.0 if absent,
    counted in `stats["expert_reward_assumed"]`). Without `task` the defaults are: cap 5, expert reward from the
    record, ids from `id`; `task` fills ETO's per-task settings (`ETO_TASK_PRESETS`); arguments given override.
    Differences from ETO: several rollouts of one id give one pair each (ETO keeps the last);
    `strip_task_prefix` is removed only where the task message starts with it.
    """
    settings = _settings(
        task,
        rollout_offset=rollout_offset,
        max_extra_rejected_turns=max_extra_rejected_turns,
        expert_reward=expert_reward,
        strip_task_prefix=strip_task_prefix,
        id_scheme=id_scheme,
    )
    if settings["rollout_offset"] is None:
        raise ValueError("pair_eto_rollouts needs `rollout_offset` or a known `task` (webshop, sciworld, alfworld)")
    stats = dict.fromkeys(
        (
            "rollouts",
            "lose",
            "win",
            "tie_dropped",
            "no_reward_dropped",
            "no_expert_dropped",
            "not_ending_in_action_dropped",
            "rejected_capped",
            "expert_reward_assumed",
        ),
        0,
    )
    result = ConvertedRows()
    expert_by_id: dict[str, tuple[_Trajectory, list[Row]]] = {}
    for index, record in enumerate(experts):
        traj, instruction = _expert(record, index, expert_offset, settings, stats)
        expert_by_id[traj.id] = (traj, instruction)

    for index, record in enumerate(rollouts):
        stats["rollouts"] += 1
        try:
            pair = _pair(record, index, expert_by_id, settings, stats)
            if pair is not None:
                check_pair(pair, index)
                result.append(pair)
        except DMPODataError as err:
            if not skip_invalid:
                raise
            result.skipped.append(SkippedRow(index, str(err)))
    result.stats = stats
    return result


def _settings(task: str | None, **explicit: Any) -> dict[str, Any]:
    """Base defaults, then the task preset, then the arguments the caller gave."""
    settings: dict[str, Any] = {
        "rollout_offset": None,
        "max_extra_rejected_turns": 5,
        "expert_reward": None,
        "strip_task_prefix": None,
        "id_scheme": "id",
    }
    if task is not None:
        if task not in ETO_TASK_PRESETS:
            raise ValueError(f"unknown ETO task {task!r}; known: {', '.join(ETO_TASK_PRESETS)}")
        settings.update(ETO_TASK_PRESETS[task])
    settings.update({key: value for key, value in explicit.items() if value is not UNSET})
    return settings


def _expert(
    record: Any, index: int, offset: int, settings: dict[str, Any], stats: dict[str, int]
) -> tuple[_Trajectory, list[Row]]:
    where = "expert record: "
    if not isinstance(record, Mapping) or "conversations" not in record:
        raise DMPODataError(f"{where}needs 'conversations' (and 'id')", index)
    messages = fastchat_messages(record["conversations"], "conversations", index, where)
    if len(messages) <= offset or messages[offset]["role"] != "user":
        raise DMPODataError(
            f"{where}message {offset} (after the instruction part) must be the human task description", index
        )
    if settings["id_scheme"] == "alfworld" and isinstance(record.get("game_file"), str):
        traj_id = record["game_file"].rstrip("/").split("/")[-1]
    elif "id" in record:
        traj_id = str(record["id"])
    else:
        raise DMPODataError(f"{where}has no 'id'", index)
    reward = settings["expert_reward"]
    if reward is None:
        if record.get("reward") is None:
            stats["expert_reward_assumed"] += 1
        reward = _reward(record.get("reward", 1.0), index, where)
    raw = [dict(m) for m in record["conversations"][offset:]]
    return _Trajectory(index, traj_id, raw, reward), messages[:offset]


def _pair(
    record: Any,
    index: int,
    experts: dict[str, tuple[_Trajectory, list[Row]]],
    settings: dict[str, Any],
    stats: dict[str, int],
) -> Row | None:
    where = "rollout: "
    if not isinstance(record, Mapping) or "conversations" not in record:
        raise DMPODataError(f"{where}needs 'conversations', 'id' and a reward ('meta.reward' or 'reward')", index)
    meta = record.get("meta") if isinstance(record.get("meta"), Mapping) else {}
    raw_reward = meta.get("reward", record.get("reward"))
    if raw_reward is None:
        stats["no_reward_dropped"] += 1
        return None
    traj_id = _rollout_id(record, meta, settings["id_scheme"], index, where)
    if traj_id not in experts:
        stats["no_expert_dropped"] += 1
        return None
    expert, instruction = experts[traj_id]
    offset = settings["rollout_offset"]
    fastchat_messages(record["conversations"], "conversations", index, where)  # validates roles and values
    messages = [dict(m) for m in record["conversations"][offset:]]
    if len(messages) > 1 and messages[-1]["from"] == "human":  # the observation after the last action
        messages.pop()
    if not messages or messages[0]["from"] != "human":
        raise DMPODataError(
            f"{where}message {offset} (rollout_offset) is not the human task description; "
            "check --rollout-offset / --task",
            index,
        )
    prefix = settings["strip_task_prefix"]
    if prefix and messages[0]["value"].startswith(prefix):
        messages[0] = {**messages[0], "value": messages[0]["value"][len(prefix) :].strip()}
    reward = _reward(raw_reward, index, where)

    outcome, kept = eto_rule(
        reward, expert.reward, len(messages), len(expert.messages), settings["max_extra_rejected_turns"], unit=2
    )
    if outcome == "lose":
        stats["lose"] += 1
        stats["rejected_capped"] += kept < len(messages)
        task_msg, chosen, rejected = expert.messages[0], expert.messages[1:], messages[1:kept]
    elif outcome == "win":
        stats["win"] += 1
        task_msg, chosen, rejected = messages[0], messages[1:], expert.messages[1:]
    else:
        stats["tie_dropped"] += 1
        return None
    if not chosen or not rejected or chosen[-1]["from"] != "gpt" or rejected[-1]["from"] != "gpt":
        stats["not_ending_in_action_dropped"] += 1
        return None
    return {
        "id": traj_id,
        "prompt": instruction + fastchat_messages([task_msg], "prompt", index, where),
        "chosen": fastchat_messages(chosen, "chosen", index, where),
        "rejected": fastchat_messages(rejected, "rejected", index, where),
        "chosen_reward": max(reward, expert.reward),
        "rejected_reward": min(reward, expert.reward),
    }


def _rollout_id(record: Mapping[str, Any], meta: Mapping[str, Any], scheme: str, index: int, where: str) -> str:
    if "id" in record:
        return str(record["id"])
    if scheme == "alfworld" and isinstance(meta.get("error"), str) and meta["error"].count("/") >= 1:
        return meta["error"].split("/")[-2]  # ETO stores the ALFWorld game file path in meta.error
    raise DMPODataError(f"{where}has no 'id' (the task id its expert trajectory has)", index)


def _reward(value: Any, index: int, where: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    raise DMPODataError(f"{where}reward must be a number, got {type(value).__name__}", index)
