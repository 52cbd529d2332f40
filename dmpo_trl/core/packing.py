"""Padding-free (packed) DMPO batches: sequences laid out in rows under a token budget, exact per-sequence sums.

A packed batch holds the ``2B`` sequences of ``B`` preference pairs (``prompt + chosen`` and ``prompt + rejected``)
concatenated into rows, with ``position_ids`` restarting at 0 at every sequence start and no ``attention_mask``.
``sequence_ids`` maps every token to its sequence in TRL's ``[chosen; rejected]`` order (``0 .. B-1`` chosen,
``B .. 2B-1`` rejected, ``-1`` row padding), so the per-sequence DMPO scores are recovered exactly with a
``scatter_add``.

Attention stays inside each sequence because transformers (5.x) derives a block-diagonal causal mask from packed
``position_ids`` when ``attention_mask is None`` and no cache is used (``find_packed_sequence_indices`` in
``transformers.masking_utils``, for sdpa, eager and flex attention), and FlashAttention 2/3 derives ``cu_seqlens``
from them, but only for a single row (``_is_packed_sequence`` requires batch size 1). Whether a given model honours
this is checked once per model by `dmpo_trl.core.attention.check_packed_attention` (two tiny forwards) rather
than assumed.

Layouts (``packing``):

- ``"bins"`` (default): first-fit-decreasing bins whose capacity is the longest sequence of the batch, so a row is
  never longer than the padded batch would be. With a dense attention kernel (sdpa / eager on CPU, where the
  block-diagonal mask is materialised) attention costs ``rows * L^2``, far less than one row of all tokens.
- ``"single_row"``: every sequence in one row: no padding at all; the layout FlashAttention needs (``cu_seqlens``
  from position ids), chosen automatically by `DMPOTrainer` for flash attention implementations.

Token budget (``max_row_tokens``): rows hold at most ``max(max_row_tokens, longest sequence)`` tokens; the row
capacity of ``"bins"`` (default: the longest sequence) and, for ``"single_row"``, a split into first-fit-decreasing
rows when one row would exceed it (default: no limit). `DMPOTrainer` gives per-sequence attention one unbounded row:
its memory is linear in the tokens whatever the row length (the per-sequence kernels never see the row; the LM head
works on bounded tiles of action positions, `dmpo_trl.core.lm_head`); memory that grows with the row (a dense
``(rows, L, L)`` mask) only arises in the bins layout, whose rows never exceed the longest sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .weights import turn_weight


__all__ = [
    "PACKING_LAYOUTS",
    "build_packed_batch",
    "pack_rows",
    "segment_sum",
]

PACKING_LAYOUTS = ("bins", "single_row")


def pack_rows(lengths: Sequence[int], packing: str = "bins", max_row_tokens: int | None = None) -> list[list[int]]:
    """Assign sequences (by index) to rows.

    ``"bins"``: first-fit decreasing into rows of capacity ``max(max(lengths), max_row_tokens or 0)`` (ties keep the
    input order, so the plan is deterministic). ``"single_row"``: one row holding every sequence in input order, or,
    when that row would exceed ``max_row_tokens``, the bins of that capacity.
    """
    if packing not in PACKING_LAYOUTS:
        raise ValueError(f"packing must be one of {PACKING_LAYOUTS}, got {packing!r}")
    if max_row_tokens is not None and max_row_tokens < 1:
        raise ValueError(f"max_row_tokens must be a positive number of tokens, got {max_row_tokens}")
    if not lengths:
        return []
    if packing == "single_row" and (max_row_tokens is None or sum(lengths) <= max_row_tokens):
        return [list(range(len(lengths)))]
    capacity = max(max(lengths), max_row_tokens or 0)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def build_packed_batch(
    ids: list[list[int]],
    turns: list[list[int]],
    num_turns: list[int],
    *,
    pad_token_id: int,
    gamma: float,
    packing: str = "bins",
    pad_to_multiple_of: int | None = None,
    max_row_tokens: int | None = None,
    turn_weighting: str = "dmpo",
) -> dict[str, torch.Tensor]:
    """Pack ``2B`` tokenized sequences (``[chosen; rejected]`` order) into rows.

    Args:
        ids: token ids of each sequence (prompt + trajectory, already truncated).
        turns: aligned turn ids (``-1`` = not an action).
        num_turns: ``T`` of each sequence (the trajectory's real number of actions).
        pad_token_id: id used for row padding.
        gamma: DMPO discount factor.
        packing: ``"bins"`` or ``"single_row"`` (see the module docstring).
        pad_to_multiple_of: pad the row length to a multiple of this value.
        max_row_tokens: token budget of a row (see the module docstring).
        turn_weighting: ``"dmpo"``, ``"uniform"`` or ``"dmpo_eq16"`` (`dmpo_trl.core.weights.turn_weight`).

    Returns:
        ``input_ids``, ``position_ids``, ``sequence_ids``, ``completion_mask``, ``turn_ids`` (int64, ``-1`` off the
        action tokens) and ``dmpo_weights`` (float32), all `(rows, L)`. ``completion_mask`` is 0 on the first token of every sequence, so the fused LM head, which
        shifts labels inside a row, never scores a sequence's first token as the continuation of its neighbour.
    """
    lengths = [len(x) for x in ids]
    if min(lengths, default=1) < 1:
        raise ValueError("cannot pack an empty sequence")
    plan = pack_rows(lengths, packing, max_row_tokens)
    length = max(sum(lengths[i] for i in row) for row in plan)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    n_rows = len(plan)
    input_ids = torch.full((n_rows, length), pad_token_id, dtype=torch.long)
    position_ids = torch.empty((n_rows, length), dtype=torch.long)
    sequence_ids = torch.full((n_rows, length), -1, dtype=torch.long)
    turn_ids = torch.full((n_rows, length), -1, dtype=torch.long)
    turn_count = torch.ones((n_rows, length), dtype=torch.long)
    for r, row in enumerate(plan):
        start = 0
        for i in row:
            end = start + lengths[i]
            input_ids[r, start:end] = torch.tensor(ids[i], dtype=torch.long)
            turn_ids[r, start:end] = torch.tensor(turns[i], dtype=torch.long)
            position_ids[r, start:end] = torch.arange(lengths[i])
            sequence_ids[r, start:end] = i
            turn_count[r, start:end] = num_turns[i]
            start = end
        # Row padding is its own segment: positions restart at 0, so it never joins the previous sequence
        position_ids[r, start:] = torch.arange(length - start)
    turn_ids[position_ids == 0] = -1  # a sequence's first token is never a label (it is a prompt token anyway)
    is_action = turn_ids >= 0
    if bool((turn_ids >= turn_count).any()):
        raise ValueError("a turn index is >= the sequence's number of turns")
    weights = torch.zeros((n_rows, length), dtype=torch.float64)
    if bool(is_action.any()):
        weights[is_action] = turn_weight(turn_ids[is_action], turn_count[is_action], gamma, turn_weighting)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "sequence_ids": sequence_ids,
        "completion_mask": is_action.long(),
        "dmpo_weights": weights.to(torch.float32),
        "turn_ids": turn_ids,
    }


def segment_sum(values: torch.Tensor, segment_ids: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sum of ``values`` per segment: `(num_segments,)`; positions with ``segment_ids < 0`` are ignored.

    Differentiable in ``values`` (``scatter_add``); ``values`` and ``segment_ids`` have the same shape.
    """
    if values.shape != segment_ids.shape:
        raise ValueError(f"shape mismatch: values {tuple(values.shape)} vs segment ids {tuple(segment_ids.shape)}")
    valid = segment_ids >= 0
    flat = torch.where(valid, values, torch.zeros_like(values)).reshape(-1)
    index = segment_ids.clamp(min=0).reshape(-1).to(values.device)
    return values.new_zeros(num_segments).scatter_add(0, index, flat)
