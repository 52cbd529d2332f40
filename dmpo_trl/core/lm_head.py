"""The LM head on action positions only: log-probs of the labelled tokens, with bounded tiles, on every device.

DPO-style losses need ``log pi(y_k | y_<k)`` of the completion tokens only, yet an LM head scores every position:
with a real vocabulary (49k-152k entries) the head is most of a CPU step. TRL's fused head
(`trl.trainer.utils.add_fused_lm_head`) keeps only the labelled positions where its Triton kernel runs (CUDA, XPU)
and scores every position elsewhere, in tiles of 4096 tokens x 32768 vocabulary entries whose CPU temporaries reach
gigabytes. `add_action_lm_head` patches a model so that ``model(..., labels=labels, fused_lm_head=True)`` -- the
call TRL's trainers make -- gathers the hidden states whose next token is labelled (``labels[:, 1:] != -100``;
padded or packed rows alike) and projects only those:

.. math::

    z_{k,v} = s \\, (h_k W^T + b)_v, \\qquad \\log p_k = z_{k, y_k} - \\log \\sum_v \\exp z_{k, v}

over tiles of at most ``TOKEN_TILE`` tokens x ``VOCAB_TILE`` vocabulary entries, with an online log-sum-exp
(running maximum ``m`` and ``sum_v exp(z_v - m)``), so head memory is one tile and head FLOPs scale with the action
tokens. The backward recomputes each tile and uses ``d log p_k / d z_{k,v} = 1[v = y_k] - p_{k,v}`` in place.

Metric outputs are computed only when asked for (``lm_head_outputs``, per call): ``entropy``
(``log Z - sum_v p_v z_v``), ``mean_logits`` (``sum_v z_v / V``), ``is_top1`` (``argmax_v z_v == y_k``, first
maximum on ties) and WPO's ``log_sum_sq_probs`` (``log sum_v p_v^2 = log sum_v exp(2 (z_v - m)) - 2 log sum_v
exp(z_v - m)``, from the same running maximum); they carry no gradient. Every output is returned shaped like ``labels[:, 1:]`` with zeros at the
unlabelled positions (TRL's `FusedCausalLMOutput`), so the per-token log-probs the losses consume are the same
tensors as before, only cheaper.

Where TRL's Triton kernel runs (CUDA, XPU) and for models with final logit soft-capping, the gathered positions go to
TRL's `trl.kernels.ChunkedLogProbFunction` instead of the torch tiles below (the same outputs).

Why the model's ``forward`` is replaced: the per-token log-probs must come out of the model call itself, because the
call goes through whatever wraps the model (DDP / DeepSpeed / FSDP hooks, accelerate's autocast, PEFT) and only the
transformers model's ``forward`` is inside all of them. TRL 1.16 has no hook between the backbone and the LM head: its
own protocol for this (``model(..., fused_lm_head=True)``, `trl.trainer.utils.add_fused_lm_head`) is itself a
replacement of ``forward``. `add_action_lm_head` serves that same call, so `DPOTrainer` and `DMPOTrainer` call the
model the same way; every other call is passed to the previous ``forward`` unchanged.
"""

from __future__ import annotations

import functools
import types

import torch
from torch.distributed.tensor import DTensor
from transformers.utils import is_triton_available


# isort: split
from trl.trainer.utils import FusedCausalLMOutput, maybe_gather_lm_head_ctx


__all__ = ["LM_HEAD_METRICS", "TOKEN_TILE", "VOCAB_TILE", "action_log_probs", "add_action_lm_head"]

TOKEN_TILE = 2048
VOCAB_TILE = 4096
LM_HEAD_METRICS = ("entropy", "mean_logits", "is_top1")
_EXTRA_OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")  # the fields of FusedCausalLMOutput
_TRITON = is_triton_available()


def _compute_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else dtype


class _TiledLogProbs(torch.autograd.Function):
    """Log-probs of ``targets`` under ``logit_scale * (hidden @ weight.T + bias)``, tile by tile (see the module)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, logit_scale, extras):
        ctx.set_materialize_grads(False)
        device = hidden.device
        compute = _compute_dtype(device.type, hidden.dtype)
        stats = torch.float64 if compute == torch.float64 else torch.float32
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        lse = torch.empty(n_tokens, device=device, dtype=stats)
        target_logit = torch.empty(n_tokens, device=device, dtype=stats)
        entropy = torch.empty_like(lse) if "entropy" in extras else None
        mean_logits = torch.empty_like(lse) if "mean_logits" in extras else None
        is_top1 = torch.empty(n_tokens, device=device, dtype=torch.bool) if "is_top1" in extras else None
        log_sum_sq = torch.empty_like(lse) if "log_sum_sq_probs" in extras else None
        buf = torch.empty(min(n_tokens, TOKEN_TILE), min(vocab, VOCAB_TILE), device=device, dtype=compute)
        fbuf = buf if compute == stats else torch.empty(buf.shape, device=device, dtype=stats)
        with torch.autocast(device.type, enabled=False):
            for t0 in range(0, n_tokens, TOKEN_TILE):
                t1 = min(t0 + TOKEN_TILE, n_tokens)
                n = t1 - t0
                h = hidden[t0:t1].to(compute)
                tgt = targets[t0:t1]
                m = torch.full((n,), float("-inf"), device=device, dtype=stats)
                s = torch.zeros(n, device=device, dtype=stats)
                tl = torch.zeros(n, device=device, dtype=stats)
                xs = torch.zeros_like(s) if entropy is not None else None
                zsum = torch.zeros_like(s) if mean_logits is not None else None
                best = torch.full_like(m, float("-inf")) if is_top1 is not None else None
                best_idx = torch.zeros(n, device=device, dtype=torch.long) if is_top1 is not None else None
                s2 = torch.zeros_like(s) if log_sum_sq is not None else None
                for v0 in range(0, vocab, VOCAB_TILE):
                    v1 = min(v0 + VOCAB_TILE, vocab)
                    z = _logits_tile(buf, fbuf, h, weight, bias, v0, v1, compute, logit_scale)
                    local = tgt - v0
                    hit = (local >= 0) & (local < v1 - v0)
                    tl = torch.where(hit, z.gather(1, local.clamp(0, v1 - v0 - 1).unsqueeze(1)).squeeze(1), tl)
                    if zsum is not None:
                        zsum += z.sum(1)
                    if best is not None:
                        tile_max, tile_idx = z.max(1)  # first maximum of the tile
                        better = tile_max > best  # strict: an earlier tile wins a tie
                        best = torch.where(better, tile_max, best)
                        best_idx = torch.where(better, tile_idx + v0, best_idx)
                    else:
                        tile_max = z.amax(1)
                    new_m = torch.maximum(m, tile_max)
                    rescale = torch.exp(m - new_m)
                    if xs is not None:
                        xs = xs * rescale + (torch.exp(z - new_m.unsqueeze(1)) * z).sum(1)
                    z.sub_(new_m.unsqueeze(1)).exp_()
                    s = s * rescale + z.sum(1)
                    if s2 is not None:  # sum_v exp(2 (z_v - m)), rescaled like s
                        s2 = s2 * rescale.square() + torch.linalg.vecdot(z, z, dim=1)
                    m = new_m
                lse[t0:t1] = m + torch.log(s)
                target_logit[t0:t1] = tl
                if entropy is not None:
                    entropy[t0:t1] = lse[t0:t1] - xs / s
                if mean_logits is not None:
                    mean_logits[t0:t1] = zsum / vocab
                if is_top1 is not None:
                    is_top1[t0:t1] = best_idx == tgt
                if log_sum_sq is not None:
                    log_sum_sq[t0:t1] = torch.log(s2) - 2 * torch.log(s)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.logit_scale = logit_scale
        log_probs = (target_logit - lse).to(hidden.dtype if hidden.dtype == torch.float64 else torch.float32)
        extra = [x for x in (entropy, mean_logits, is_top1, log_sum_sq) if x is not None]
        ctx.mark_non_differentiable(*extra)
        return log_probs, entropy, mean_logits, is_top1, log_sum_sq

    @staticmethod
    def backward(ctx, grad_log_probs, *_):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        if grad_log_probs is None or not (needs_hidden or needs_weight or needs_bias):
            return None, None, None, None, None, None
        with maybe_gather_lm_head_ctx(weight, bias):  # ZeRO-3 re-partitions the head after the forward
            return _TiledLogProbs._backward(ctx, grad_log_probs, hidden, weight, bias, targets, lse)

    @staticmethod
    def _backward(ctx, grad_log_probs, hidden, weight, bias, targets, lse):
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        device = hidden.device
        compute = _compute_dtype(device.type, hidden.dtype)
        stats = lse.dtype
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        grad_hidden = torch.zeros(hidden.shape, device=device, dtype=stats) if needs_hidden else None
        grad_weight = torch.zeros(weight.shape, device=device, dtype=stats) if needs_weight else None
        grad_bias = torch.zeros(bias.shape, device=device, dtype=stats) if needs_bias else None
        buf = torch.empty(min(n_tokens, TOKEN_TILE), min(vocab, VOCAB_TILE), device=device, dtype=compute)
        fbuf = buf if compute == stats else torch.empty(buf.shape, device=device, dtype=stats)
        g_all = grad_log_probs.to(stats)
        scale = ctx.logit_scale
        with torch.autocast(device.type, enabled=False):
            for t0 in range(0, n_tokens, TOKEN_TILE):
                t1 = min(t0 + TOKEN_TILE, n_tokens)
                h = hidden[t0:t1].to(compute)
                h_stats = h.to(stats)
                g, tgt, lse_t = g_all[t0:t1], targets[t0:t1], lse[t0:t1].unsqueeze(1)
                for v0 in range(0, vocab, VOCAB_TILE):
                    v1 = min(v0 + VOCAB_TILE, vocab)
                    z = _logits_tile(buf, fbuf, h, weight, bias, v0, v1, compute, scale)
                    # d log p_k / d z_kv = 1[v = y_k] - p_kv; times the incoming gradient g_k; times s for d z / d y
                    dz = z.sub_(lse_t).exp_().mul_(-g.unsqueeze(1))
                    local = tgt - v0
                    rows = ((local >= 0) & (local < v1 - v0)).nonzero().squeeze(1)
                    if rows.numel():
                        dz.index_put_((rows, local[rows]), g[rows], accumulate=True)
                    if scale != 1.0:
                        dz.mul_(scale)
                    if grad_hidden is not None:
                        grad_hidden[t0:t1].addmm_(dz, weight[v0:v1].to(stats))
                    if grad_weight is not None:
                        grad_weight[v0:v1].addmm_(dz.t(), h_stats)
                    if grad_bias is not None:
                        grad_bias[v0:v1] += dz.sum(0)
        return (
            grad_hidden.to(hidden.dtype) if grad_hidden is not None else None,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
            None,
            None,
            None,
        )


def _logits_tile(buf, fbuf, h, weight, bias, v0, v1, compute, logit_scale):
    """``logit_scale * (h @ weight[v0:v1].T + bias[v0:v1])`` into the reused buffers, in the statistics dtype."""
    tile = buf[: h.shape[0], : v1 - v0]
    torch.mm(h, weight[v0:v1].to(compute).t(), out=tile)
    if bias is not None:
        tile.add_(bias[v0:v1].to(compute))
    z = tile if fbuf is buf else fbuf[: h.shape[0], : v1 - v0].copy_(tile)
    if logit_scale != 1.0:
        z.mul_(logit_scale)
    return z


def action_log_probs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    outputs: tuple[str, ...] = ("log_probs",),
    logit_scale: float = 1.0,
    final_logit_softcapping: float | None = None,
) -> dict[str, torch.Tensor]:
    """Log-probs (and the requested metric outputs) of ``targets`` for gathered hidden states ``hidden`` `(N, H)`.

    Returns a dict with ``log_probs`` `(N,)` (float32, float64 for a float64 model) and each requested field of
    `LM_HEAD_METRICS` and ``log_sum_sq_probs``. Runs TRL's Triton kernel on CUDA / XPU and for soft-capped logits, the torch tiles otherwise.
    """
    extras = tuple(x for x in outputs if x != "log_probs")
    unknown = [x for x in extras if x not in _EXTRA_OUTPUTS]
    if unknown:
        raise ValueError(f"unknown LM head outputs {unknown}; choose among {_EXTRA_OUTPUTS}")
    use_trl = final_logit_softcapping is not None or (_TRITON and hidden.device.type in ("cuda", "xpu"))
    if use_trl:
        from trl.kernels import ChunkedLogProbFunction  # Triton kernels: imported only where they run

        chunk = 32768 if hidden.device.type in ("cuda", "xpu") else VOCAB_TILE
        values = ChunkedLogProbFunction.apply(
            hidden, weight, bias, targets, 1.0, chunk, final_logit_softcapping, logit_scale, ("log_probs", *extras)
        )
        return {k: v for k, v in zip(("log_probs", *_EXTRA_OUTPUTS), values, strict=True) if v is not None}
    log_probs, entropy, mean_logits, is_top1, log_sum_sq = _TiledLogProbs.apply(
        hidden, weight, bias, targets, logit_scale, extras
    )
    out = {
        "log_probs": log_probs,
        "entropy": entropy,
        "mean_logits": mean_logits,
        "is_top1": is_top1,
        "log_sum_sq_probs": log_sum_sq,
    }
    return {k: v for k, v in out.items() if v is not None}


def _logit_scale(text_config) -> float:
    # The same reading of the config's logit multipliers as TRL's `add_fused_lm_head`
    scale = getattr(text_config, "logit_scale", None)
    if scale is None:
        scale = getattr(text_config, "output_multiplier", None)
    if scale is None:
        scale = getattr(text_config, "lm_head_multiplier", None)
    if scale is None and getattr(text_config, "logits_scaling", None) is not None:
        scaling = text_config.logits_scaling
        scale = scaling if text_config.model_type == "hyperclovax" else 1 / scaling
    return 1.0 if scale is None else float(scale)


def _aux_loss(model, text_config, router_logits, attention_mask):
    """Mixtral's load-balancing loss, the one TRL's fused head returns (`outputs.aux_loss`)."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func  # MoE models only

    num_experts = getattr(text_config, "num_experts", None) or getattr(text_config, "num_local_experts", None)
    if num_experts is None:
        num_experts = model.num_experts
    return load_balancing_loss_func(router_logits, num_experts, text_config.num_experts_per_tok, attention_mask)


def add_action_lm_head(model) -> bool:
    """Patch a causal LM so that ``model(..., labels=labels, fused_lm_head=True)`` scores the labelled positions only.

    Idempotent (returns whether it patched). Call it on the transformers model (for PEFT, on the base model), before
    or after TRL's `add_fused_lm_head`: the patched forward handles ``fused_lm_head=True`` itself and passes every
    other call to the previous forward. Extra keyword ``lm_head_outputs`` (default ``("log_probs",)``) selects the
    metric outputs of that call (`LM_HEAD_METRICS`). Returns TRL's `FusedCausalLMOutput` with fields shaped like
    ``labels[:, 1:]`` (or like ``shift_labels``), zeros at unlabelled positions.
    """
    if getattr(model, "_dmpo_action_lm_head", False):
        return False
    previous = model.forward
    previous_func = getattr(previous, "__func__", None)
    text_config = model.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)
    logit_scale = _logit_scale(text_config)

    @functools.wraps(type(model).forward)
    def forward(
        self,
        *args,
        fused_lm_head=False,
        labels=None,
        shift_labels=None,
        num_items_in_batch=None,
        lm_head_outputs=("log_probs",),
        **kwargs,
    ):
        if not fused_lm_head:
            for key, value in (
                ("labels", labels),
                ("shift_labels", shift_labels),
                ("num_items_in_batch", num_items_in_batch),
            ):
                if value is not None:
                    kwargs[key] = value
            # Rebind to `self`, so that a deep copy of a patched model runs its own weights
            return previous_func(self, *args, **kwargs) if previous_func is not None else previous(*args, **kwargs)
        kwargs["use_cache"] = False
        if getattr(text_config, "output_router_logits", False):
            kwargs.setdefault("output_router_logits", True)
        backbone = self.base_model(*args, **kwargs)
        hidden = backbone.last_hidden_state
        rows, length, width = hidden.shape
        if shift_labels is None:
            labels = labels[:, 1:]
        else:
            labels = shift_labels
        lm_head = self.get_output_embeddings()
        labels = labels.to(lm_head.weight.device)
        mask = labels != -100
        # Flat index of each labelled position in the contiguous (rows, length) hidden states: no copy of them
        row_idx, pos_idx = mask.nonzero(as_tuple=True)
        flat = hidden.reshape(rows * length, width)
        gathered = flat.index_select(0, (row_idx * length + pos_idx).to(flat.device)).to(lm_head.weight.device)
        weight, bias = lm_head.weight, lm_head.bias
        if isinstance(weight, DTensor):  # FSDP2 shards the head; gather it once, as TRL's fused head does
            weight = weight.full_tensor()
            bias = bias.full_tensor() if bias is not None else None
        with maybe_gather_lm_head_ctx(weight, bias):  # ZeRO-3
            values = action_log_probs(
                gathered, weight, bias, labels[mask], tuple(lm_head_outputs), logit_scale, softcap
            )
        # masked_scatter keeps an all-unlabelled batch connected to the graph (a differentiable zero)
        fields = {k: v.new_zeros(mask.shape).masked_scatter(mask, v) for k, v in values.items()}
        log_probs = fields["log_probs"]
        loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        aux_loss = None
        if kwargs.get("output_router_logits"):
            aux_loss = _aux_loss(self, text_config, backbone.router_logits, kwargs.get("attention_mask"))
            loss = loss + getattr(text_config, "router_aux_loss_coef", 0.0) * aux_loss
        return FusedCausalLMOutput(
            loss=loss,
            log_probs=log_probs,
            entropy=fields.get("entropy"),
            log_sum_sq_probs=fields.get("log_sum_sq_probs"),
            mean_logits=fields.get("mean_logits"),
            is_top1=fields.get("is_top1"),
            label_mask=mask,
            aux_loss=aux_loss,
        )

    model.forward = types.MethodType(forward, model)
    model._dmpo_action_lm_head = True
    return True
