"""Sweep: DPOTrainer (padded) vs DMPOTrainer (padded) vs DMPOTrainer (padding-free) over length and actions per side.

    python benchmarks/sweep.py [--lengths 2048,4096,8192,16384] [--turns 2,8,32,128] [--batch 1]
                               [--steps 1] [--warmup 1] [--max-rss-gb 12] [model options of suite.py]

Two sweeps, one invocation, every measurement a fresh `benchmarks/suite.py` worker (same model, vocabulary, data
and `TrainingArguments` per point; the three trainers interleaved, the order reversed at every other point):

- ``max_length`` L: `benchmarks.agent_data.scaled_pairs` with ``scale = 2 L / 4096`` (chosen 3-12, rejected 3-40
  actions at scale 1, observations of 8-80 words), so trajectories fill the length through more turns and the
  share of action tokens stays ~27%; each trainer truncates at L by its own rule;
- ``T`` actions per side: both sides exactly T actions, observations of 4-20 words, ``max_length`` 16384 (nothing
  truncated), so tokens per pair grow linearly in T; the table shows CPU seconds per pair and their ratio to 4x the
  previous point, next to the same ratio of the model FLOPs (causal attention grows quadratically: the share of the
  attention products is printed).

Per point: pairs/s (wall), pairs per CPU-second relative to DPOTrainer (process CPU time of the timed steps, less
sensitive to other load on a shared machine) and peak resident memory growth. A worker whose resident memory
exceeds ``--max-rss-gb`` is ended (shown as ``> N GB``) so that a run that cannot fit fails alone.
Not a timed test: compare ratios of one invocation; load averages are printed per point.
"""

from __future__ import annotations

import argparse
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import add_model_args, forward_args, load_average, run_worker  # noqa: E402


SUITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "suite.py")
KINDS = ("dpo", "dmpo", "dmpo_pf")
SHORT = {"dpo": "DPO", "dmpo": "DMPO padded", "dmpo_pf": "DMPO padding-free"}


def measure_point(args, extra: list[str], flip: bool) -> dict[str, dict]:
    base = forward_args(args, skip=("lengths", "turns", "kinds"))
    out = {}
    for kind in reversed(KINDS) if flip else KINDS:
        res = run_worker(SUITE, kind, [*base, *extra])
        out[kind] = res
        note = "out of memory" if res.get("oom") else f"{res['pairs'] / res['time_s']:.4f} pairs/s"
        print(f"  {' '.join(extra)} {kind}: {note}", flush=True)
    return out


def cpu_per_pair(r: dict) -> float:
    return r["cpu_time_s"] / r["pairs"]


def cells(point: dict[str, dict], limit: float) -> list[str]:
    """pairs/s of each trainer, pairs per CPU-second vs DPO, peak RSS growth of each trainer, memory vs DPO."""
    dpo = point["dpo"]
    row = []
    for kind in KINDS:
        r = point[kind]
        row.append(f"> {limit:g} GB" if r.get("oom") else f"{r['pairs'] / r['time_s']:.4f}")
    for kind in KINDS[1:]:
        r = point[kind]
        ok = not (r.get("oom") or dpo.get("oom"))
        row.append(f"{cpu_per_pair(dpo) / cpu_per_pair(r):.2f}x" if ok else "-")
    for kind in KINDS:
        r = point[kind]
        row.append(f"> {limit * 1024:.0f}" if r.get("oom") else f"{r['peak_rss_growth_mb']:.0f}")
    pf = point["dmpo_pf"]
    ok = not (pf.get("oom") or dpo.get("oom"))
    row.append(f"{pf['peak_rss_growth_mb'] / dpo['peak_rss_growth_mb']:.2f}x" if ok else "-")
    return row


HEADER = (
    "| {what} | real tokens/pair | DPO pairs/s | DMPO padded pairs/s | DMPO padding-free pairs/s | "
    "pairs/CPU-s vs DPO: DMPO padded | pairs/CPU-s vs DPO: padding-free | peak RSS growth (MB): DPO | DMPO padded | "
    "padding-free | padding-free memory vs DPO | attention share of FLOPs |"
)


def print_table(what: str, points: dict, limit: float) -> None:
    print(HEADER.format(what=what))
    print("| " + " | ".join(["---"] * (HEADER.count("|") - 1)) + " |")
    for value, point in points.items():
        pf = point["dmpo_pf"]
        ref = pf if not pf.get("oom") else next((r for r in point.values() if not r.get("oom")), None)
        tokens = f"{ref['real_tokens'] / ref['pairs']:.0f}" if ref else "-"
        share = f"{ref['attention_share']:.1%}" if ref else "-"
        print(f"| {value} | {tokens} | " + " | ".join(cells(point, limit)) + f" | {share} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="2048,4096,8192,16384")
    p.add_argument("--turns", default="2,8,32,128")
    p.add_argument("--steps", type=int, default=1, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps per run")
    p.add_argument("--seed", type=int, default=0)
    add_model_args(p)
    p.set_defaults(batch=1, max_rss_gb=12.0)
    args = p.parse_args()
    lengths = [int(x) for x in args.lengths.split(",") if x]
    turns = [int(x) for x in args.turns.split(",") if x]

    print(f"load average at start: {load_average()}", flush=True)
    by_length, by_turns = {}, {}
    flip = False
    for length in lengths:
        print(f"max_length {length} (load {load_average()})", flush=True)
        extra = [f"--max-length={length}", f"--scale={2 * length / 4096:g}"]
        by_length[length] = measure_point(args, extra, flip)
        flip = not flip
    for t in turns:
        print(f"T = {t} (load {load_average()})", flush=True)
        by_turns[t] = measure_point(args, [f"--turns={t}", "--max-length=16384"], flip)
        flip = not flip
    print(f"load average at end: {load_average()}\n")

    model = f"Llama hidden={args.hidden} layers={args.layers} heads={args.heads}"
    print(
        f"model: {model} (random init, attn={args.attn}, float32), tokenizer {args.tokenizer}; batch={args.batch} "
        f"pair(s); {args.steps} timed step(s) after {args.warmup} warm-up per run; torch threads={args.threads}; "
        f"memory limit per run {args.max_rss_gb:g} GB\n"
    )
    if by_length:
        print("max_length sweep (actions per side x 2 max_length / 4096):")
        print_table("max_length", by_length, args.max_rss_gb)
    if by_turns:
        print("\nactions-per-side sweep (T actions on each side, max_length 16384):")
        print_table("T", by_turns, args.max_rss_gb)
        print(
            "\nCPU seconds per pair, and their ratio to the previous point scaled by T / previous T (1.00 = linear in T); model FLOPs the same:"
        )
        print("| T | " + " | ".join(f"{SHORT[k]} CPU-s/pair | ratio" for k in KINDS) + " | FLOPs ratio |")
        print("| " + " | ".join(["---"] * (2 + 2 * len(KINDS))) + " |")
        previous = None
        for t, point in by_turns.items():
            row = [str(t)]
            for kind in KINDS:
                r = point[kind]
                if r.get("oom"):
                    row += ["-", "-"]
                    continue
                ratio = "-"
                if previous is not None and not previous[1][kind].get("oom"):
                    scale = t / previous[0]
                    ratio = f"{cpu_per_pair(r) / (scale * cpu_per_pair(previous[1][kind])):.2f}"
                row += [f"{cpu_per_pair(r):.2f}", ratio]
            pf = point["dmpo_pf"]
            flops = "-"
            if previous is not None and not (pf.get("oom") or previous[1]["dmpo_pf"].get("oom")):
                prev = previous[1]["dmpo_pf"]
                scale = t / previous[0]
                flops = f"{(pf['model_flops'] / pf['pairs']) / (scale * prev['model_flops'] / prev['pairs']):.2f}"
            print("| " + " | ".join(row) + f" | {flops} |")
            previous = (t, point)


if __name__ == "__main__":
    main()
