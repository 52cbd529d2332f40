"""The DMPO batch: `DataCollatorForDMPO` builds it, `DMPOBatch` reads it.

A batch holds the ``2B`` sequences of ``B`` preference pairs in TRL's ``[chosen; rejected]`` order, either
right-padded (one sequence per row, with ``attention_mask``) or packed (``padding_free=True``: sequences concatenated
into rows, see `dmpo_trl.core.packing`). `DMPOBatch` hides that difference from the trainer: model inputs, labels,
per-sequence sums, side masks and token counts come out the same way for both layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin

from .packing import PACKING_LAYOUTS, build_packed_batch, segment_sum
from .rows.columns import REFERENCE_COLUMNS
from .rows.tokenization import NOT_ACTION, truncate_trajectory
from .weights import check_turn_weighting, dmpo_turn_weights


__all__ = ["DMPOBatch", "DataCollatorForDMPO", "collator_for_config"]


def _pad(rows: list[list], value, dtype: torch.dtype, length: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=dtype)
    return out


@dataclass
class DataCollatorForDMPO(DataCollatorMixin):
    """Collate tokenized preference pairs (`dmpo_trl.core.rows.checks.prepare_pair`) into one ``[chosen; rejected]`` batch.

    Each example holds ``prompt_ids``, ``chosen_ids``, ``rejected_ids``, ``chosen_turn_ids``, ``rejected_turn_ids``,
    ``chosen_num_turns``, ``rejected_num_turns`` and optionally ``ref_chosen_logps`` / ``ref_rejected_logps``
    (precomputed DMPO-weighted reference scores). Sequences longer than `max_length` lose whole trailing actions
    (`truncate_trajectory`); ``T`` stays the trajectory's real number of actions.

    Returns a dict with, for ``2 * batch`` rows (chosen first, then rejected in the same pair order):

    - ``input_ids``, ``attention_mask``: `(2B, L)`;
    - ``completion_mask``: `(2B, L)`, 1 on action tokens only (assistant content + its end-of-turn token);
    - ``dmpo_weights``: `(2B, L)` float32, ``phi(t, T)`` on the tokens of action ``t``, 0 elsewhere;
    - ``turn_ids``: `(2B, L)`, the action index ``t`` of each token, ``-1`` off the action tokens;
    - ``num_turns`` / ``kept_turns``: `(2B,)` actions in the trajectory / actions kept after truncation;
    - ``ref_chosen_logps`` / ``ref_rejected_logps``: `(B,)`, when the examples carry them.

    With ``padding_free=True`` the ``2B`` sequences are packed into rows instead (see `dmpo_trl.core.packing`):
    ``input_ids``, ``completion_mask``, ``dmpo_weights``, ``turn_ids``, ``position_ids`` (restarting at 0 per sequence) and
    ``sequence_ids`` (index of each token's sequence in ``[chosen; rejected]`` order, ``-1`` on row padding) are
    `(rows, L)`; there is no ``attention_mask``; the per-sequence keys are unchanged.

    Args:
        pad_token_id (`int`): token used for padding.
        gamma (`float`): DMPO discount factor.
        max_length (`int`, *optional*): maximum sequence length (prompt + trajectory).
        pad_to_multiple_of (`int`, *optional*): pad the sequence length to a multiple of this value.
        padding_free (`bool`, defaults to `False`): pack the sequences into rows instead of padding each one.
        packing (`str`, defaults to `"bins"`): packed layout, ``"bins"`` (rows no longer than the longest sequence)
            or ``"single_row"`` (one row, what FlashAttention needs); see `dmpo_trl.core.packing`.
        max_row_tokens (`int`, *optional*): token budget of a packed row (at least the longest sequence).
        return_tensors (`str`, defaults to `"pt"`): only ``"pt"`` (PyTorch) is implemented.
        turn_weighting (`str`, defaults to `"dmpo"`): ``"dmpo"`` (``phi(t, T)``), ``"uniform"`` (every action weight
            1: multi-turn DPO) or ``"dmpo_eq16"`` (the paper's printed Eq. 16), see `dmpo_trl.core.weights.turn_weight`.
    """

    pad_token_id: int
    gamma: float
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    padding_free: bool = False
    packing: str = "bins"
    max_row_tokens: int | None = None
    return_tensors: str = "pt"
    turn_weighting: str = "dmpo"

    def __post_init__(self):
        if self.packing not in PACKING_LAYOUTS:
            raise ValueError(f"packing must be one of {PACKING_LAYOUTS}, got {self.packing!r}")
        check_turn_weighting(self.turn_weighting)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
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

        num_turns_t = torch.tensor(num_turns, dtype=torch.long)
        if self.padding_free:
            batch = build_packed_batch(
                ids,
                turns,
                num_turns,
                pad_token_id=self.pad_token_id,
                gamma=self.gamma,
                packing=self.packing,
                pad_to_multiple_of=self.pad_to_multiple_of,
                max_row_tokens=self.max_row_tokens,
                turn_weighting=self.turn_weighting,
            )
        else:
            length = max(len(x) for x in ids)
            if self.pad_to_multiple_of:
                length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
            turn_ids = _pad(turns, NOT_ACTION, torch.long, length)
            batch = {
                "input_ids": _pad(ids, self.pad_token_id, torch.long, length),
                "attention_mask": _pad([[1] * len(x) for x in ids], 0, torch.long, length),
                "completion_mask": (turn_ids >= 0).long(),
                "dmpo_weights": dmpo_turn_weights(
                    turn_ids, num_turns_t, self.gamma, turn_weighting=self.turn_weighting
                ),
                "turn_ids": turn_ids,
            }
        batch["num_turns"] = num_turns_t
        batch["kept_turns"] = torch.tensor(kept, dtype=torch.long)
        for key in REFERENCE_COLUMNS:
            if key in examples[0]:
                batch[key] = torch.tensor([float(ex[key]) for ex in examples], dtype=torch.float32)
        return batch


def collator_for_config(args: Any, pad_token_id: int, data_collator: Any = None) -> Any:
    """The trainer's collator: `DataCollatorForDMPO` built from a `DMPOConfig` when `data_collator` is ``None``;
    otherwise `data_collator` itself, after checking that it weights turns as `args` says (``gamma``,
    ``turn_weighting``, where it has them)."""
    if data_collator is None:
        return DataCollatorForDMPO(
            pad_token_id=pad_token_id,
            gamma=args.gamma,
            max_length=args.max_length,
            pad_to_multiple_of=args.pad_to_multiple_of,
            padding_free=args.padding_free,
            turn_weighting=args.turn_weighting,
        )
    for key in ("gamma", "turn_weighting"):
        expected = getattr(args, key)
        if getattr(data_collator, key, expected) != expected:
            raise ValueError(
                f"data_collator.{key}={getattr(data_collator, key)!r} differs from args.{key}={expected!r}."
            )
    return data_collator


class DMPOBatch:
    """Read access to a collated batch, the same for the padded and the packed layout.

    Per-token tensors handed to it (log-probs, entropies, ...) are aligned with ``input_ids[:, 1:]`` (what the fused
    LM head returns); per-sequence results are `(2B,)` in ``[chosen; rejected]`` order or split into halves.
    """

    def __init__(self, inputs: dict[str, torch.Tensor]):
        if "dmpo_weights" not in inputs:
            raise ValueError(
                "The batch has no `dmpo_weights`: DMPOTrainer needs `DataCollatorForDMPO` (or a collator that emits "
                "the same keys)."
            )
        self.inputs = inputs
        self.packed = "sequence_ids" in inputs
        self.num_sequences = inputs["num_turns"].size(0)
        self.num_pairs = self.num_sequences // 2

    def model_inputs(self, varlen_kwargs: Callable[[torch.Tensor], dict] | None = None) -> dict[str, Any]:
        """``input_ids`` plus ``attention_mask`` (padded) or ``position_ids`` (packed, no mask; ``varlen_kwargs``
        adds the sequence boundaries that per-sequence attention reads)."""
        if not self.packed:
            return {"input_ids": self.inputs["input_ids"], "attention_mask": self.inputs["attention_mask"]}
        model_inputs = {"input_ids": self.inputs["input_ids"], "position_ids": self.inputs["position_ids"]}
        if varlen_kwargs is not None:
            model_inputs.update(varlen_kwargs(self.inputs["position_ids"]))
        return model_inputs

    def labels(self) -> torch.Tensor:
        """``input_ids`` with every non-action token set to ``-100`` (packed: also each sequence's first token, which
        the fused LM head, shifting inside a row, would otherwise score as the continuation of its neighbour)."""
        labels = self.inputs["input_ids"].masked_fill(self.inputs["completion_mask"] == 0, -100)
        if self.packed:
            labels = labels.masked_fill(self.inputs["position_ids"] == 0, -100)
        return labels

    @property
    def action_mask(self) -> torch.Tensor:
        """Action tokens, aligned with ``input_ids[:, 1:]``."""
        return self.inputs["completion_mask"][:, 1:].bool()

    @property
    def weights(self) -> torch.Tensor:
        """DMPO weights, aligned with ``input_ids[:, 1:]``."""
        return self.inputs["dmpo_weights"][:, 1:]

    def sequence_sums(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of a per-token tensor over each sequence: `(2B,)`."""
        if not self.packed:
            return values.sum(dim=-1)
        return segment_sum(values, self.inputs["sequence_ids"][:, 1:], self.num_sequences)

    def side_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Action-token masks of the chosen and of the rejected sequences, each shaped like ``input_ids[:, 1:]``."""
        mask = self.action_mask
        if self.packed:
            seq = self.inputs["sequence_ids"][:, 1:]
            return mask & (seq >= 0) & (seq < self.num_pairs), mask & (seq >= self.num_pairs)
        is_chosen = (torch.arange(mask.size(0), device=mask.device) < self.num_pairs).unsqueeze(1)
        return mask & is_chosen, mask & ~is_chosen

    def real_tokens(self) -> torch.Tensor:
        """Number of non-padding tokens, a 0-dim tensor."""
        real = (self.inputs["sequence_ids"] >= 0) if self.packed else self.inputs["attention_mask"].bool()
        return real.sum()

    def action_tokens(self) -> torch.Tensor:
        """Number of action tokens, a 0-dim tensor."""
        return self.inputs["completion_mask"].sum()
