"""Per-turn implicit rewards ``beta * r_t`` of preference pairs, for inspecting what DMPO learned turn by turn.

``r_t = log pi_theta(a_t | s_t) - log pi_ref(a_t | s_t)``, summed over the tokens of action ``t`` (the tokens
`dmpo_trl.core.rows.tokenization` marks as action ``t``; prompt and observations excluded), as in the DMPO loss.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch

from dmpo_trl.core.rows.tokenization import NOT_ACTION, tokenize_pair


__all__ = ["mean_by_turn", "turn_log_ratios"]


def _turn_logps(model: Any, ids: list[int], turn_ids: list[int], num_turns: int) -> torch.Tensor:
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    logits = model(input_ids=input_ids, use_cache=False).logits[0, :-1].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[0, 1:, None])[:, 0]
    turns = torch.tensor(turn_ids[1:], device=device)
    out = torch.zeros(num_turns, device=device)
    mask = turns != NOT_ACTION
    return out.index_add_(0, turns[mask], token_logps[mask]).cpu()


@torch.no_grad()
def turn_log_ratios(
    policy: Any, tokenizer: Any, rows: Iterable[dict[str, Any]], *, reference: Any = None
) -> list[dict[str, list[float]]]:
    """``r_t`` for every action of the chosen and the rejected trajectory of each row.

    Args:
        policy: the trained model.
        tokenizer: its tokenizer (with the chat template used in training).
        rows: preference rows (prompt / chosen / rejected).
        reference: the reference model; ``None`` when `policy` is a PEFT model, whose adapters are then disabled to
            get the reference (as DMPOTrainer does with ``peft_config``).

    Returns:
        One dict per row with keys ``"chosen"`` and ``"rejected"``: lists of ``r_t`` (``t = 0 .. T-1``).
    """
    if reference is None and not hasattr(policy, "disable_adapter"):
        raise ValueError("pass reference= (the policy is not a PEFT model, so it has no adapter-free reference)")
    was_training = policy.training
    policy.eval()
    results = []
    try:
        for row_index, row in enumerate(rows):
            tok = tokenize_pair(tokenizer, row, row=row_index)
            result = {}
            for side in ("chosen", "rejected"):
                ids = tok["prompt_ids"] + tok[f"{side}_ids"]
                turn_ids = [NOT_ACTION] * len(tok["prompt_ids"]) + tok[f"{side}_turn_ids"]
                num_turns = tok[f"{side}_num_turns"]
                pol = _turn_logps(policy, ids, turn_ids, num_turns)
                ref_ctx = policy.disable_adapter() if reference is None else contextlib.nullcontext()
                with ref_ctx:
                    ref = _turn_logps(reference if reference is not None else policy, ids, turn_ids, num_turns)
                result[side] = (pol - ref).tolist()
            results.append(result)
    finally:
        if was_training:
            policy.train()
    return results


def mean_by_turn(ratios: list[dict[str, list[float]]], side: str, scale: float = 1.0) -> list[tuple[int, float, int]]:
    """``(t, mean of scale * r_t over the rows that have action t, number of such rows)`` for each turn index."""
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for item in ratios:
        for t, value in enumerate(item[side]):
            sums[t] += scale * value
            counts[t] += 1
    return [(t, sums[t] / counts[t], counts[t]) for t in sorted(sums)]
