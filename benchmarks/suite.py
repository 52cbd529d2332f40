"""Throughput suite: DPOTrainer (padded) vs DMPOTrainer (padded) vs DMPOTrainer (padding-free) on agent-like data.

    python benchmarks/suite.py [--steps 4] [--warmup 1] [--repeats 2] [--batch 2] [--max-length 4096]
                               [--scale 2] [--turns T] [--tokenizer smollm2] [--hidden 256] [--layers 4]
                               [--kinds dpo,dmpo,dmpo_pf]

Vocabulary: SmolLM2-135M-Instruct's tokenizer (49,152 entries, its ChatML template; `--tokenizer tiny` for the
483-entry test BPE), so the LM head costs what it costs with a real model.

Length distribution (`benchmarks.agent_data.scaled_pairs`, seeded): a system message and a task of 20-60 words;
chosen trajectories of 3-12 x `--scale` actions, rejected ones of 3-40 x `--scale` actions (failures run longer);
each action "Thought: ... Action: ..." of 5-25 words; each observation 8-80 words. Longer trajectories come from
more turns, so the share of action tokens (~27%) does not depend on the scale. `--turns T` gives both sides
exactly `T` actions with observations of 4-20 words instead (the sweep's time-per-action points). Trajectories are
truncated to `--max-length` tokens by each trainer's own rule (DMPO drops whole trailing actions, DPO cuts at the
token); the default 4096 is the authors' setting. The parent prints the measured token lengths.

Every trainer gets the same tiny Llama (random init, seed 0, `sdpa` attention, float32, `bf16=False`), the same
frozen reference copy, the same `TrainingArguments` and the same batches; each runs its reference forward in the
step (`precompute_ref_log_probs=False`). Each measurement is a fresh process (see `benchmarks/common.py`); kinds are
interleaved and repeated, and the table shows medians over the repeats:

- pairs/s and tokens/s: timed steps only (after `--warmup`); tokens are the real (non-pad) tokens of the batches,
  prompt counted on both sides as it is computed twice; pairs per CPU-second: the same over process CPU time;
- real share: real tokens / computed positions (rows x row length) over the timed batches;
- model FLOPs: policy forward + backward and reference forward over the real tokens, causal attention
  (`benchmarks.common.causal_forward_flops`), LM head on every real token for every trainer;
- peak memory: peak resident set growth during `train()` (VmHWM after resetting it), and the total peak.

Not a timed test: timings on a shared machine are noisy; compare ratios from one invocation, and check the load
averages printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    KINDS,
    LABELS,
    add_model_args,
    build_trainer,
    forward_args,
    guard_memory,
    load_average,
    measure,
    run_workers,
)


OBS_WORDS = (8, 80)
TURN_OBS_WORDS = (4, 20)


def rows_for(args):
    from benchmarks.agent_data import agent_pairs, scaled_pairs

    n = args.batch * (args.steps + args.warmup)
    if args.turns:
        return agent_pairs(
            n, seed=args.seed, chosen=(args.turns,) * 2, rejected=(args.turns,) * 2, obs_words=TURN_OBS_WORDS
        )
    return scaled_pairs(n, seed=args.seed, scale=args.scale, obs_words=OBS_WORDS)


def worker(args) -> dict:
    trainer = build_trainer(args.worker, args, rows_for(args))
    res = measure(trainer, args.warmup)
    res["kind"] = args.worker
    res["attn_implementation"] = trainer.model.config._attn_implementation
    return res


def length_summary(args) -> str:
    import numpy as np

    from benchmarks.common import load_tokenizer
    from dmpo_trl.core.rows.tokenization import tokenize_pair

    tok = load_tokenizer(args.tokenizer)
    lengths = {"prompt": [], "chosen": [], "rejected": []}
    for i, row in enumerate(rows_for(args)):
        out = tokenize_pair(tok, row, i)
        p = len(out["prompt_ids"])
        lengths["prompt"].append(p)
        lengths["chosen"].append(p + len(out["chosen_ids"]))
        lengths["rejected"].append(p + len(out["rejected_ids"]))
    parts = []
    for name, v in lengths.items():
        q = np.percentile(v, [0, 50, 100]).round().astype(int).tolist()
        parts.append(f"{name} min/median/max {q[0]}/{q[1]}/{q[2]}")
    return "tokens per sequence before truncation (prompt included): " + "; ".join(parts)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps per run")
    p.add_argument("--repeats", type=int, default=2, help="runs per trainer, interleaved")
    p.add_argument("--max-length", type=int, default=4096)
    p.add_argument("--scale", type=float, default=2.0, help="actions per side x this (see the docstring)")
    p.add_argument("--turns", type=int, help="exactly this many actions per side (observations of 4-20 words)")
    p.add_argument("--seed", type=int, default=0, help="data seed")
    p.add_argument("--kinds", default="dpo,dmpo,dmpo_pf", help=f"comma-separated, among {','.join(KINDS)}")
    p.add_argument("--peak-tflops", type=float, help="device peak (dense) TFLOP/s, to print model FLOPs utilisation")
    add_model_args(p)
    p.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        guard_memory(args.max_rss_gb)
        print("RESULT " + json.dumps(worker(args)))
        return
    kinds = args.kinds.split(",")
    if "dpo" not in kinds or any(k not in KINDS for k in kinds):
        sys.exit(f"--kinds must include dpo and be among {KINDS}")
    print(f"load average before: {load_average()}")
    print(length_summary(args))
    results = run_workers(__file__, kinds, args, args.repeats, forward_args(args))
    print(f"load average after: {load_average()}")

    def med(kind, fn):
        return statistics.median(fn(r) for r in results[kind])

    rows = {}
    for kind in kinds:
        rows[kind] = {
            "pairs_s": med(kind, lambda r: r["pairs"] / r["time_s"]),
            "pairs_cpu_s": med(kind, lambda r: r["pairs"] / r["cpu_time_s"]),
            "tokens_s": med(kind, lambda r: r["real_tokens"] / r["time_s"]),
            "real_share": med(kind, lambda r: r["real_tokens"] / r["computed_tokens"]),
            "growth": med(kind, lambda r: r["peak_rss_growth_mb"]),
            "peak": med(kind, lambda r: r["peak_rss_mb"]),
            "tokens_pair": med(kind, lambda r: r["real_tokens"] / r["pairs"]),
            "tflops": med(kind, lambda r: r["model_flops"] / r["time_s"] / 1e12),
            "gpu": med(kind, lambda r: r["peak_gpu_mb"] or 0.0),
        }
    base = rows["dpo"]
    model = (
        f"Llama hidden={args.hidden} layers={args.layers} heads={args.heads}" if args.preset == "tiny" else args.preset
    )
    print(
        f"\nmodel: {model} (random init, attn={args.attn}, {'bf16 autocast' if args.bf16 else 'float32'}) on "
        f"{args.device}; "
        f"batch={args.batch} pairs; max_length={args.max_length}; {args.steps} timed steps after {args.warmup} "
        f"warm-up, {args.repeats} interleaved runs per trainer (medians); torch threads={args.threads}"
    )
    first = results[next((k for k in kinds if k != "dpo"), "dpo")][0]  # DPO's completion mask covers observations
    print(
        f"vocabulary: {first['vocab_size']} entries (--tokenizer {args.tokenizer}); action tokens (DMPO's labels): "
        f"{first['action_tokens'] / first['real_tokens']:.1%} of the real tokens; causal attention: "
        f"{first['attention_share']:.1%} of the forward FLOPs"
    )
    print(
        "| trainer | pairs/s | real tokens/s | real share of computed tokens | real tokens/pair | "
        "peak RSS growth (MB) | peak RSS (MB) | pairs/s vs DPO | peak RSS growth vs DPO |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in kinds:
        r = rows[kind]
        print(
            f"| {LABELS[kind]} | {r['pairs_s']:.3f} | {r['tokens_s']:.0f} | {r['real_share']:.1%} | "
            f"{r['tokens_pair']:.0f} | {r['growth']:.0f} | {r['peak']:.0f} | {r['pairs_s'] / base['pairs_s']:.2f}x | "
            f"{r['growth'] / max(base['growth'], 1e-9):.2f}x |"
        )
    print(
        "model FLOPs (real tokens, causal attention; policy forward+backward and reference forward) per second: "
        + "; ".join(
            f"{kind} {rows[kind]['tflops'] * 1e3:.1f} GFLOP/s"
            + (f" (MFU {rows[kind]['tflops'] / args.peak_tflops:.1%})" if args.peak_tflops else "")
            for kind in kinds
        )
    )
    if args.device == "cuda":
        print("peak GPU memory allocated: " + "; ".join(f"{kind} {rows[kind]['gpu']:.0f} MB" for kind in kinds))
    print(
        "\npairs per CPU-second (process time of the timed steps; less sensitive to other load) vs DPO: "
        + "; ".join(
            f"{kind} {rows[kind]['pairs_cpu_s'] / base['pairs_cpu_s']:.2f}x" for kind in kinds if kind != "dpo"
        )
    )
    print(
        "per-run pairs/s ratio to the DPO run of the same round: "
        + "; ".join(
            f"{kind} "
            + ", ".join(
                f"{(a['pairs'] / a['time_s']) / (b['pairs'] / b['time_s']):.2f}"
                for a, b in zip(results[kind], results["dpo"], strict=True)
            )
            for kind in kinds
            if kind != "dpo"
        )
    )
    print(
        "batch shapes (rows x length) of the first run: "
        + "; ".join(f"{kind} {[tuple(s) for s in results[kind][0]['shapes']]}" for kind in kinds)
    )


if __name__ == "__main__":
    main()
