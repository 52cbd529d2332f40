"""Attention for packed batches: the ``dmpo_varlen_sdpa`` implementation and the check that sequences stay apart.

transformers' own handling of packed sequences under ``sdpa`` / ``eager`` materialises a block-diagonal
``(rows, 1, L, L)`` mask and runs dense attention over the whole row: every query still computes scores against
every key of the row, neighbours and future tokens included, and the causal fast path of the kernel is lost. This
module registers ``"dmpo_varlen_sdpa"``: when a batch is packed (``cu_seq_lens_q`` given, or ``position_ids``
restarting inside a row) and there is no padding mask, it runs ``torch.nn.functional.scaled_dot_product_attention``
once per sequence with ``is_causal=True`` -- the CPU/GPU analogue of FlashAttention's varlen kernel, costing
``sum(l_i^2) / 2`` instead of ``rows * L^2``. Every other call (a padding mask, a cache, one sequence per row) is
delegated unchanged to transformers' ``sdpa`` implementation, so a model switched to it behaves exactly like
``sdpa`` outside packed batches.

`use_varlen_sdpa` switches a model only when that is safe: it currently runs ``sdpa`` and every layer is full causal
attention (no sliding window, chunked or linear layers, whose masks the per-sequence path would not apply). It
registers the implementation in transformers' registries on first use (`register_varlen_sdpa`), not at import.

`check_packed_attention` runs a model twice on tiny packed rows and refuses it when a packed sequence can see the one
before it, whatever attention implementation it uses: the trainer runs it once per model before the first packed
batch.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask


__all__ = [
    "VARLEN_SDPA",
    "attn_implementation",
    "check_packed_attention",
    "is_flash_attention",
    "is_varlen_capable",
    "packed_segments",
    "register_varlen_sdpa",
    "use_varlen_sdpa",
    "varlen_kwargs",
    "varlen_sdpa_attention_forward",
]

VARLEN_SDPA = "dmpo_varlen_sdpa"


def _row_segments_from_positions(position_ids: torch.Tensor, rows: int) -> list[list[int]] | None:
    """Segment lengths of each row from ``position_ids`` restarting at every sequence; None if nothing is packed."""
    pos = position_ids.expand(rows, -1) if position_ids.size(0) != rows else position_ids
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = (pos[:, 1:] - pos[:, :-1]) != 1
    if int(starts.sum()) == rows:
        return None
    length = pos.size(1)
    out = []
    for row in starts.tolist():
        idx = [i for i, s in enumerate(row) if s] + [length]
        out.append([b - a for a, b in zip(idx[:-1], idx[1:], strict=True)])
    return out


_SEGMENTS_ATTR = "_dmpo_row_segments"


def _row_segments_from_cu(cu_seq_lens: torch.Tensor, rows: int, length: int) -> list[list[int]]:
    """Segment lengths of each row from cumulative lengths over the flattened ``rows * length`` tokens.

    The same ``cu_seq_lens`` tensor reaches every layer of one forward; its segments are read to the host once and
    kept on the tensor itself (one device sync per forward, freed with the tensor)."""
    segments = getattr(cu_seq_lens, _SEGMENTS_ATTR, None)
    if segments is not None and len(segments) == rows and all(sum(r) == length for r in segments):
        return segments
    segments = _compute_row_segments(cu_seq_lens, rows, length)
    setattr(cu_seq_lens, _SEGMENTS_ATTR, segments)
    return segments


def _compute_row_segments(cu_seq_lens: torch.Tensor, rows: int, length: int) -> list[list[int]]:
    cu = [int(x) for x in cu_seq_lens.tolist()]
    if cu[0] != 0 or cu[-1] != rows * length:
        raise ValueError(f"cu_seq_lens must run from 0 to rows * length = {rows * length}, got {cu[0]} .. {cu[-1]}")
    out: list[list[int]] = [[] for _ in range(rows)]
    for a, b in zip(cu[:-1], cu[1:], strict=True):
        row = a // length
        if b <= a or b > (row + 1) * length:
            raise ValueError("a packed sequence crosses a row boundary or is empty")
        out[row].append(b - a)
    return out


def varlen_sdpa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention function for ``attn_implementation="dmpo_varlen_sdpa"`` (see the module docstring).

    ``query`` / ``key`` / ``value``: `(rows, heads, L, head_dim)`. Returns `(rows, L, heads, head_dim)` like
    transformers' ``sdpa_attention_forward``.
    """
    rows, _, q_len, _ = query.shape
    segments = None
    if attention_mask is None and key.shape[2] == q_len and q_len > 1:
        if cu_seq_lens_q is not None:
            if cu_seq_lens_k is not None and not torch.equal(cu_seq_lens_k, cu_seq_lens_q):
                raise ValueError("dmpo_varlen_sdpa needs cu_seq_lens_k == cu_seq_lens_q (self-attention)")
            segments = _row_segments_from_cu(cu_seq_lens_q, rows, q_len)
        elif position_ids is not None:
            segments = _row_segments_from_positions(position_ids, rows)
    if segments is None:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            position_ids=position_ids,
            **kwargs,
        )
    kwargs.pop("is_causal", None)
    out_rows = []
    # `split` (not slicing): its backward concatenates the gradients instead of zero-filling a full tensor per piece
    for r, (q_row, k_row, v_row) in enumerate(zip(query.split(1), key.split(1), value.split(1), strict=True)):
        sizes = segments[r]
        pieces = [
            sdpa_attention_forward(module, q, k, v, None, dropout=dropout, scaling=scaling, **kwargs)[0]
            for q, k, v in zip(
                q_row.split(sizes, dim=2), k_row.split(sizes, dim=2), v_row.split(sizes, dim=2), strict=True
            )
        ]
        out_rows.append(torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0])
    return (torch.cat(out_rows, dim=0) if rows > 1 else out_rows[0]), None


def varlen_mask(*args, attention_mask=None, q_length=None, kv_length=None, **kwargs):
    """Mask function for ``dmpo_varlen_sdpa``: none when there is no padding mask and no cache (the attention function
    then applies the causal, per-sequence structure itself), transformers' ``sdpa`` mask otherwise."""
    if attention_mask is None and q_length == kv_length and not kwargs.get("q_offset") and not kwargs.get("kv_offset"):
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, q_length=q_length, kv_length=kv_length, **kwargs)


def register_varlen_sdpa() -> None:
    """Register ``dmpo_varlen_sdpa`` in transformers' attention and mask registries (idempotent)."""
    if VARLEN_SDPA in ALL_MASK_ATTENTION_FUNCTIONS:
        return
    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_attention_forward)
    AttentionMaskInterface.register(VARLEN_SDPA, varlen_mask)


def _full_causal_only(config) -> bool:
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return False
    if getattr(config, "use_sliding_window", True) and getattr(config, "sliding_window", None) is not None:
        return False
    return getattr(config, "attention_chunk_size", None) is None and getattr(config, "is_causal", True)


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attn_implementation(model) -> str | None:
    """The attention implementation a model (or a PEFT model around it) runs, read from its text config."""
    config = getattr(_base_model(model), "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return getattr(config, "_attn_implementation", None)


def is_flash_attention(model) -> bool:
    """Whether the model runs a FlashAttention implementation (which separates packed sequences in one row only)."""
    impl = attn_implementation(model) or ""
    return "flash" in impl and "flex" not in impl


def is_varlen_capable(model) -> bool:
    """Whether the model's attention computes each packed sequence on its own (no dense row-wide mask):
    ``dmpo_varlen_sdpa`` or FlashAttention. Such models get every sequence of a batch in one row."""
    return attn_implementation(model) == VARLEN_SDPA or is_flash_attention(model)


def use_varlen_sdpa(model) -> bool:
    """Switch a transformers model from ``sdpa`` to ``dmpo_varlen_sdpa`` when that is safe; return whether it did.

    Safe: the model currently uses ``sdpa``, supports setting its attention implementation (the functional
    ``AttentionInterface`` design) and all its layers are full causal attention. Outside packed batches the new
    implementation is ``sdpa``, so generation and padded batches are unchanged. ``None`` and model names (not yet
    loaded) are left alone.
    """
    if model is None or isinstance(model, str):
        return False
    base = _base_model(model)
    config = getattr(base, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if not hasattr(base, "set_attn_implementation") or not base._can_set_attn_implementation():
        return False
    if not _full_causal_only(config):
        return False
    register_varlen_sdpa()
    base.set_attn_implementation(VARLEN_SDPA)
    return getattr(base.config, "_attn_implementation", None) == VARLEN_SDPA


def packed_segments(position_ids: torch.Tensor) -> torch.Tensor:
    """Cumulative sequence lengths over the flattened rows (``cu_seq_lens``, int32) from packed ``position_ids``."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = (position_ids[:, 1:] - position_ids[:, :-1]) != 1
    idx = starts.reshape(-1).nonzero().reshape(-1)
    total = torch.tensor([position_ids.numel()], device=position_ids.device)
    return torch.cat([idx, total]).to(torch.int32)


def varlen_kwargs(position_ids: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """FlashAttention-style varlen keyword arguments (``cu_seq_lens_q/k``, ``max_length_q/k``) of a packed batch."""
    cu = packed_segments(position_ids)
    max_len = int((cu[1:] - cu[:-1]).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max_len, "max_length_k": max_len}


@torch.no_grad()
def check_packed_attention(
    model, token_ids: torch.Tensor, num_rows: int = 2, seq_len: int = 6, extra_kwargs=None
) -> None:
    """Raise `ValueError` unless packed sequences of this model are independent (checked, not assumed).

    Builds ``num_rows`` rows of two sequences ``[A | B]`` from ``token_ids``, runs the model on them and on
    ``[A' | B]`` (A's tokens changed), and requires B's logits to be unchanged: any attention from B into A (a mask
    not derived from ``position_ids``, a model that ignores them, FlashAttention with several rows, ...) shows up.
    Runs in eval mode (no dropout) and restores the training mode. ``extra_kwargs(position_ids)`` returns further
    forward arguments (the varlen ``cu_seq_lens`` the trainer passes), so the check runs the same path as training.
    """
    device = next(model.parameters()).device
    token_ids = token_ids.reshape(-1)[: 2 * seq_len].to(device)
    if token_ids.numel() < 2 * seq_len:
        token_ids = token_ids.repeat(2 * seq_len)[: 2 * seq_len]
    a, b = token_ids[:seq_len], token_ids[seq_len:]
    a_changed = torch.flip(b, dims=[0])
    if torch.equal(a_changed, a):
        a_changed = torch.roll(a, 1)
    positions = torch.cat([torch.arange(seq_len), torch.arange(seq_len)]).to(device).expand(num_rows, -1)
    was_training = model.training
    model.eval()
    try:
        outs = []
        for first in (a, a_changed):
            row = torch.cat([first, b]).expand(num_rows, -1).contiguous()
            extra = extra_kwargs(positions) if extra_kwargs is not None else {}
            logits = model(input_ids=row, position_ids=positions, use_cache=False, **extra).logits
            outs.append(logits[:, seq_len:].float())
    finally:
        model.train(was_training)
    diff = (outs[0] - outs[1]).abs().max().item()
    scale = outs[0].abs().max().item()
    if not diff <= 1e-5 * max(scale, 1.0):
        raise ValueError(
            f"padding_free=True: with this model (attention implementation {attn_implementation(model)!r}, "
            f"{num_rows} packed row(s)) a packed sequence attends to the sequence before it (its logits change by "
            f"{diff:.3g} when the other sequence changes). Packed batches need a model whose attention mask is "
            "derived from `position_ids` when `attention_mask` is None (transformers' sdpa / eager / flex attention, "
            "or FlashAttention with a single row). Use padding_free=False or another attn_implementation."
        )
