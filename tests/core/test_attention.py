"""Attention for packed batches: ``dmpo_varlen_sdpa`` against dense block-diagonal attention, its registration on
use, and the check that refuses a model whose packed sequences see each other."""

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dmpo_trl.core.attention import (
    VARLEN_SDPA,
    check_packed_attention,
    packed_segments,
    use_varlen_sdpa,
    varlen_sdpa_attention_forward,
)
from dmpo_trl.testing import tiny_model


def test_varlen_attention_is_registered_when_a_model_is_switched_not_at_import(tok):
    code = (
        "import dmpo_trl.core.trainer, dmpo_trl.core.collator;"
        "from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS;"
        f"assert {VARLEN_SDPA!r} not in ALL_MASK_ATTENTION_FUNCTIONS, 'registered at import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    model = tiny_model(tok, attn_implementation="sdpa")
    assert use_varlen_sdpa(model) and model.config._attn_implementation == VARLEN_SDPA


def test_segments_are_read_once_per_cu_seq_lens_tensor():
    """The packed segments are kept on the ``cu_seq_lens`` tensor every layer of a forward receives (no module cache)."""

    class Module(torch.nn.Module):
        num_key_value_groups = 1
        is_causal = True

    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2]])
    cu = packed_segments(pos)
    q = torch.randn(1, 2, 8, 4, dtype=torch.float64)
    out_a, _ = varlen_sdpa_attention_forward(Module(), q, q, q, None, cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    assert cu._dmpo_row_segments == [[3, 2, 3]]
    out_b, _ = varlen_sdpa_attention_forward(Module(), q, q, q, None, position_ids=pos)
    assert torch.equal(out_a, out_b)
    assert "_SEGMENTS_CACHE" not in vars(sys.modules["dmpo_trl.core.attention"])


def test_model_that_ignores_position_ids_is_refused(tmp_path, tok):
    """A model path that lets packed sequences see each other must be refused, not trained on."""
    model = tiny_model(tok, attn_implementation="sdpa")
    original = model.forward

    def leaky_forward(*args, position_ids=None, **kwargs):  # drops the positions: one causal sequence per row
        return original(*args, **kwargs)

    model.forward = leaky_forward
    with pytest.raises(ValueError, match="attends to the sequence before it"):
        check_packed_attention(model, torch.arange(5, 17))
    check_packed_attention(tiny_model(tok, attn_implementation="eager"), torch.arange(5, 17))  # honest model passes


def test_varlen_attention_equals_dense_block_diagonal_sdpa():
    torch.manual_seed(0)

    class Module(torch.nn.Module):
        num_key_value_groups = 2
        is_causal = True

    sizes = [[5, 1, 7, 3], [9, 7]]  # two rows of 16: a one-token sequence, a row with two sequences
    pos = torch.tensor([sum([list(range(n)) for n in row], []) for row in sizes])
    q = torch.randn(2, 4, 16, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 16, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 16, 8, dtype=torch.float64, requires_grad=True)
    seg = torch.tensor([sum([[i] * n for i, n in enumerate(row)], []) for row in sizes])
    mask = (seg[:, None, :, None] == seg[:, None, None, :]) & torch.ones(16, 16, dtype=torch.bool).tril()
    dense = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask)
    dense = dense.transpose(1, 2)
    for kwargs in (
        {"position_ids": pos},
        {"cu_seq_lens_q": packed_segments(pos), "cu_seq_lens_k": packed_segments(pos)},
    ):
        out, _ = varlen_sdpa_attention_forward(Module(), q, k, v, None, **kwargs)
        assert torch.allclose(out, dense, atol=1e-12)
        g_dense = torch.autograd.grad(dense.sum(), (q, k, v), retain_graph=True)
        g_out = torch.autograd.grad(out.sum(), (q, k, v))
        for a, b in zip(g_dense, g_out, strict=True):
            assert torch.allclose(a, b, atol=1e-12)


def test_varlen_switch_is_sdpa_outside_packed_batches(tok):
    sdpa = tiny_model(tok, seed=3, attn_implementation="sdpa")
    varlen = copy.deepcopy(sdpa)
    assert use_varlen_sdpa(varlen) and varlen.config._attn_implementation == VARLEN_SDPA
    ids = torch.randint(5, 400, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    with torch.no_grad():
        assert torch.equal(
            sdpa(input_ids=ids, attention_mask=mask).logits, varlen(input_ids=ids, attention_mask=mask).logits
        )
        assert torch.equal(sdpa(input_ids=ids).logits, varlen(input_ids=ids).logits)
    prompt = ids[:1, :5]
    out_a = sdpa.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    out_b = varlen.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(out_a, out_b)
