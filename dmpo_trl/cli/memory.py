"""Per-GPU memory of model states for DMPO runs: a formula, not a measurement.

    python -m dmpo_trl.cli.memory            # the table in docs/launching.md
    python -m dmpo_trl.cli.memory --gpus 4   # another data-parallel size

Model states only (weights, gradients, optimizer states, reference model); activations, the CUDA context, allocator
fragmentation and temporary buffers come on top. Mixed-precision Adam as in the ZeRO paper (Rajbhandari et al.,
2020): bf16 weights (2 bytes/param) and gradients (2), fp32 master weights + Adam moments (12), i.e. 16 bytes per
trained parameter. The same 16 bytes hold for fp32 weights with bf16 autocast (4 + 4 + 8). The DMPO reference model
is frozen bf16 (2 bytes/param): a full copy per GPU under DDP and ZeRO-1/2 (TRL runs it as an unsharded DeepSpeed
inference engine), sharded like the policy under ZeRO-3 / FSDP, absent under LoRA (the reference is the base with
the adapter off).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


BF16 = 2.0
ADAM_MIXED = 12.0  # fp32 master weights + two fp32 moments
NF4 = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights + 8-bit absmax per 64 + fp32 per 256 blocks (double quant)

#: (parameters, embedding + LM-head parameters), in billions, of the recipes' models and common sizes.
#: Embeddings and LM head are vocab x hidden each (untied); bitsandbytes leaves them in bf16 under QLoRA.
MODELS: dict[str, tuple[float, float]] = {
    "Llama-2-7B-Chat": (6.74, 2 * 32000 * 4096 / 1e9),
    "Mistral-7B-Instruct-v0.2": (7.24, 2 * 32000 * 4096 / 1e9),
    "Qwen2.5-7B-Instruct": (7.62, 2 * 152064 * 3584 / 1e9),
    "Llama-3.1-8B-Instruct": (8.03, 2 * 128256 * 4096 / 1e9),
    "Llama-2-13B-Chat": (13.0, 2 * 32000 * 5120 / 1e9),
    "Llama-3.1-70B-Instruct": (70.6, 2 * 128256 * 8192 / 1e9),
}


def full_finetune_bytes(params: float, stage: str, gpus: int) -> float:
    """Bytes per GPU of policy states + reference model for full fine-tuning.

    Args:
        params: number of parameters.
        stage: "ddp", "zero1", "zero2" or "zero3" (FSDP full shard is the same as zero3).
        gpus: data-parallel ranks the states are sharded over.
    """
    n = float(gpus)
    weights, grads, optim, ref = BF16 * params, BF16 * params, ADAM_MIXED * params, BF16 * params
    if stage == "ddp":
        return weights + grads + optim + ref
    if stage == "zero1":
        return weights + grads + optim / n + ref
    if stage == "zero2":
        return weights + (grads + optim) / n + ref
    if stage == "zero3":
        return (weights + grads + optim + ref) / n
    raise ValueError(f"unknown stage {stage!r}: expected ddp, zero1, zero2 or zero3")


def adapter_bytes(params: float, embed_params: float, adapter_params: float, quantized: bool) -> float:
    """Bytes per GPU for LoRA (bf16 base) or QLoRA (NF4 base except embeddings / LM head, which stay bf16), plus the
    adapter trained with mixed-precision Adam (16 bytes/param). No reference copy: it is the base, adapter off."""
    body = params - embed_params
    base = (NF4 if quantized else BF16) * body + BF16 * embed_params
    return base + (BF16 + BF16 + ADAM_MIXED) * adapter_params


def lora_params_all_linear(params: float, rank: int = 16) -> float:
    """LoRA size on all linear layers, rank x (in + out) per matrix, ~ rank x 3.7e-4 x params for Llama-2-7B
    (r=16: 40M); models with grouped-query attention have a little less, so this errs high."""
    return rank * 0.37e-3 * params


def table(gpus: int = 8) -> str:
    """Markdown table of GB (1e9 bytes) per GPU by model and set-up."""
    head = (
        "| model (params) | DDP | ZeRO-1 | ZeRO-2 | ZeRO-3 / FSDP | LoRA r=16, 1 GPU | QLoRA nf4 r=16, 1 GPU |\n"
        "|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for name, (billions, embed_billions) in MODELS.items():
        p, e = billions * 1e9, embed_billions * 1e9
        full = [full_finetune_bytes(p, s, gpus) / 1e9 for s in ("ddp", "zero1", "zero2", "zero3")]
        lora = adapter_bytes(p, e, lora_params_all_linear(p), quantized=False) / 1e9
        qlora = adapter_bytes(p, e, lora_params_all_linear(p), quantized=True) / 1e9
        cells = " | ".join(f"{v:.1f}" for v in (*full, lora, qlora))
        rows.append(f"| {name} ({billions:g}B) | {cells} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=8, help="data-parallel ranks for the full fine-tuning columns")
    args = parser.parse_args(argv)
    print(f"GB per GPU for model states, {args.gpus} GPUs for DDP/ZeRO columns (formula, not a measurement):")
    print(table(args.gpus))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
