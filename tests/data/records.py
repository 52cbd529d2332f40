"""Hand-written records shaped like the real ones each converter reads (ETO, LLaMA-Factory, OpenAI)."""

from __future__ import annotations

import json


WEBSHOP_INSTRUCTION = (
    "You are web shopping.\nI will give you instructions about what to do.\nYou have to follow the instructions.\n"
    "Every round I will give you an observation and a list of available actions, you have to respond an action "
    "based on the state and instruction.\nYou can use search action if search is available.\nYou can click one of "
    "the buttons in clickables.\nAn action should be of the following structure:\nsearch[keywords]\nclick[value]\n"
    "If the action is not valid, perform nothing.\nYour response should use the following format:\n\n"
    "Thought: I think ...\nAction: click[something]"
)
WEBSHOP_TASK = (
    "Observation:\nWebShop [SEP] Instruction: [SEP] i need a long clip-in hair extension which is natural looking, "
    "and price lower than 40.00 dollars [SEP] Search"
)
A1 = "Thought: I think I should search for long clip-in hair extensions.\nAction: search[long clip-in hair extension]"
O1 = (
    "Observation:\n[Back to Search] [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP] B09QQLDJ93 [SEP] "
    "Pink Clip-in Hair Extensions 20 inch [SEP] $19.99 [SEP] B093BKJWBS [SEP] Natural Wavy Clip In [SEP] $45.0"
)
A2 = "Thought: B09QQLDJ93 is natural looking and under 40 dollars.\nAction: click[b09qqldj93]"
O2 = "Observation:\n[Back to Search] [SEP] < Prev [SEP] color [SEP] pink [SEP] natural black [SEP] Buy Now"
A3 = "Thought: I should buy it.\nAction: click[buy now]"
R1 = "Thought: I will look at the second item.\nAction: click[b093bkjwbs]"
RO1 = "Observation:\n[Back to Search] [SEP] < Prev [SEP] Natural Wavy Clip In [SEP] Price: $45.0 [SEP] Buy Now"
R2 = "Thought: This one is fine.\nAction: click[buy now]"


def fc(sender: str, value: str) -> dict:
    return {"from": sender, "value": value}


def eto_pair() -> dict:
    """A WebShop preference pair as in ETO's / DMPO's data_pm/webshop_pm.json."""
    return {
        "id": "webshop_1043",
        "prompt": [fc("human", WEBSHOP_INSTRUCTION), fc("gpt", "OK"), fc("human", WEBSHOP_TASK)],
        "chosen": [fc("gpt", A1), fc("human", O1), fc("gpt", A2), fc("human", O2), fc("gpt", A3)],
        "rejected": [fc("gpt", A1), fc("human", O1), fc("gpt", R1), fc("human", RO1), fc("gpt", R2)],
    }


def eto_expert(task_id: str, actions: list[str], reward: float | None = None) -> dict:
    """An ETO SFT trajectory: instruction, OK, task, then actions alternating with observations."""
    conversations = [fc("human", WEBSHOP_INSTRUCTION), fc("gpt", "OK"), fc("human", f"Task {task_id}")]
    for t, action in enumerate(actions):
        if t:
            conversations.append(fc("human", f"Observation: expert {task_id} step {t}"))
        conversations.append(fc("gpt", action))
    record = {"id": task_id, "conversations": conversations}
    if reward is not None:
        record["reward"] = reward
    return record


def eto_rollout(
    task_id: str, actions: list[str], reward, offset: int = 4, trailing_obs: bool = True, task_text: str | None = None
) -> dict:
    """An ETO rollout file `outputs/<model>/<task>/<id>.json`: `offset` messages of instruction + in-context example."""
    prefix = [fc("human", WEBSHOP_INSTRUCTION), fc("gpt", "OK")]
    while len(prefix) < offset:
        prefix += [fc("human", "Example task"), fc("gpt", "Thought: example.\nAction: search[example]")]
    conversations = prefix[:offset] + [fc("human", task_text or f"Task {task_id}")]
    for t, action in enumerate(actions):
        if t:
            conversations.append(fc("human", f"Observation: rollout {task_id} step {t}"))
        conversations.append(fc("gpt", action))
    if trailing_obs:
        conversations.append(fc("human", "Observation: episode over"))
    return {
        "id": task_id,
        "meta": {"reward": reward, "success": reward == 1, "steps": len(actions)},
        "conversations": conversations,
    }


SEARCH_TOOL = {
    "name": "search_products",
    "description": "Search the shop catalogue.",
    "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string"}, "max_price": {"type": "number"}},
        "required": ["query"],
    },
}
BUY_TOOL = {
    "name": "buy",
    "description": "Buy a product by its id.",
    "parameters": {"type": "object", "properties": {"product_id": {"type": "string"}}, "required": ["product_id"]},
}


def llamafactory_pair() -> dict:
    """LLaMA-Factory ShareGPT preference row with a tool call and an observation in the prompt."""
    return {
        "conversations": [
            fc("human", "Find me natural clip-in hair extensions under $40."),
            fc(
                "function_call",
                json.dumps(
                    {"name": "search_products", "arguments": {"query": "clip-in hair extension", "max_price": 40}}
                ),
            ),
            fc("observation", json.dumps([{"id": "B09QQLDJ93", "price": 19.99}])),
        ],
        "chosen": fc("function_call", json.dumps({"name": "buy", "arguments": {"product_id": "B09QQLDJ93"}})),
        "rejected": fc("gpt", "I could not find anything."),
        "system": "You are a shopping agent.",
        "tools": json.dumps([SEARCH_TOOL, BUY_TOOL]),
    }


def openai_call(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def openai_conversations() -> tuple[list[dict], list[dict]]:
    """Two full OpenAI conversations sharing system + user + first tool round, then diverging."""
    shared = [
        {"role": "system", "content": "You are a shopping agent."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Find me clip-in hair extensions"},
                {"type": "text", "text": "under $40."},
            ],
        },
    ]
    chosen = shared + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                openai_call("call_1", "search_products", {"query": "clip-in hair extension", "max_price": 40})
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '[{"id": "B09QQLDJ93", "price": 19.99}]'},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [openai_call("call_2", "buy", {"product_id": "B09QQLDJ93"})],
        },
        {"role": "tool", "tool_call_id": "call_2", "content": "order placed"},
        {"role": "assistant", "content": "I bought B09QQLDJ93 for $19.99.", "refusal": None},
    ]
    rejected = shared + [
        {
            "role": "assistant",
            "content": "Let me search.",
            "tool_calls": [openai_call("call_9", "search_products", {"query": "hair"})],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "[]"},
        {"role": "assistant", "content": "Nothing found."},
    ]
    return chosen, rejected
