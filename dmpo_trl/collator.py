"""`DataCollatorForDMPO`: the concatenated ``[chosen; rejected]`` batch with per-token DMPO weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .loss import dmpo_turn_weights
from .packing import PACKING_LAYOUTS, build_packed_batch
from .tokenization import NOT_ACTION, truncate_trajectory

__all__ = ["DataCollatorForDMPO"]


def _pad(rows: list[list], value, dtype: torch.dtype, length: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=dtype)
    return out


@dataclass
class DataCollatorForDMPO:
    """Collate tokenized preference pairs (see `tokenize_pair`) into one right-padded ``[chosen; rejected]`` batch.

    Each example holds ``prompt_ids``, ``chosen_ids``, ``rejected_ids``, ``chosen_turn_ids``, ``rejected_turn_ids``,
    ``chosen_num_turns``, ``rejected_num_turns`` and optionally ``ref_chosen_logps`` / ``ref_rejected_logps``
    (precomputed DMPO-weighted reference scores). Sequences longer than `max_length` lose whole trailing actions
    (`truncate_trajectory`); ``T`` stays the trajectory's real number of actions.

    Returns a dict with, for ``2 * batch`` rows (chosen first, then rejected in the same pair order):

    - ``input_ids``, ``attention_mask``: `(2B, L)`;
    - ``completion_mask``: `(2B, L)`, 1 on action tokens only (assistant content + its end-of-turn token);
    - ``dmpo_weights``: `(2B, L)` float32, ``phi(t, T)`` on the tokens of action ``t``, 0 elsewhere;
    - ``num_turns`` / ``kept_turns``: `(2B,)` actions in the trajectory / actions kept after truncation;
    - ``ref_chosen_logps`` / ``ref_rejected_logps``: `(B,)`, when the examples carry them.

    With ``padding_free=True`` the ``2B`` sequences are packed into rows instead (see `dmpo_trl.packing`):
    ``input_ids``, ``completion_mask``, ``dmpo_weights``, ``position_ids`` (restarting at 0 per sequence) and
    ``sequence_ids`` (index of each token's sequence in ``[chosen; rejected]`` order, ``-1`` on row padding) are
    `(rows, L)`; there is no ``attention_mask``; the per-sequence keys are unchanged.

    Args:
        pad_token_id (`int`): token used for padding.
        gamma (`float`): DMPO discount factor.
        max_length (`int`, *optional*): maximum sequence length (prompt + trajectory).
        pad_to_multiple_of (`int`, *optional*): pad the sequence length to a multiple of this value.
        padding_free (`bool`, defaults to `False`): pack the sequences into rows instead of padding each one.
        packing (`str`, defaults to `"bins"`): packed layout, ``"bins"`` (rows no longer than the longest sequence)
            or ``"single_row"`` (one row, what FlashAttention needs); see `dmpo_trl.packing`.
    """

    pad_token_id: int
    gamma: float
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    padding_free: bool = False
    packing: str = "bins"

    def __post_init__(self):
        if self.packing not in PACKING_LAYOUTS:
            raise ValueError(f"packing must be one of {PACKING_LAYOUTS}, got {self.packing!r}")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, turns, num_turns, kept = [], [], [], []
        for side in ("chosen", "rejected"):
            for ex in examples:
                prompt = list(ex["prompt_ids"])
                seq_ids, seq_turns, kept_turns = truncate_trajectory(
                    len(prompt),
                    prompt + list(ex[f"{side}_ids"]),
                    [NOT_ACTION] * len(prompt) + list(ex[f"{side}_turn_ids"]),
                    self.max_length,
                )
                if kept_turns == 0:
                    raise ValueError(
                        f"a {side} trajectory keeps no action within max_length={self.max_length}; the trainer's "
                        "dataset preparation should have reported this row"
                    )
                ids.append(seq_ids)
                turns.append(seq_turns)
                num_turns.append(int(ex[f"{side}_num_turns"]))
                kept.append(kept_turns)

        if self.padding_free:
            batch = build_packed_batch(
                ids, turns, num_turns, pad_token_id=self.pad_token_id, gamma=self.gamma, packing=self.packing,
                pad_to_multiple_of=self.pad_to_multiple_of,
            )
            batch["num_turns"] = torch.tensor(num_turns, dtype=torch.long)
            batch["kept_turns"] = torch.tensor(kept, dtype=torch.long)
            self._add_ref_logps(batch, examples)
            return batch

        length = max(len(x) for x in ids)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        turn_ids = _pad(turns, NOT_ACTION, torch.long, length)
        num_turns_t = torch.tensor(num_turns, dtype=torch.long)
        batch = {
            "input_ids": _pad(ids, self.pad_token_id, torch.long, length),
            "attention_mask": _pad([[1] * len(x) for x in ids], 0, torch.long, length),
            "completion_mask": (turn_ids >= 0).long(),
            "dmpo_weights": dmpo_turn_weights(turn_ids, num_turns_t, self.gamma),
            "num_turns": num_turns_t,
            "kept_turns": torch.tensor(kept, dtype=torch.long),
        }
        self._add_ref_logps(batch, examples)
        return batch

    @staticmethod
    def _add_ref_logps(batch, examples):
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([float(ex[key]) for ex in examples], dtype=torch.float32)
