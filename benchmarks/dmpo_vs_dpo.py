"""DMPOTrainer vs TRL's DPOTrainer on the same multi-turn data and model: step time and peak memory ratios.

    python benchmarks/dmpo_vs_dpo.py [--steps 8] [--repeats 2] [--hidden 256] [--layers 4] [--max-length 2048]

Both trainers padded (the overhead of DMPO itself; `benchmarks/suite.py` adds padding-free DMPO). Each measurement
runs in its own process (so peak memory is not shared), alternating DMPO and DPO `--repeats` times; the script prints
the median step time and peak resident memory growth during training, and the ratios DMPO / DPO. Data:
`benchmarks.agent_data.agent_pairs` with its default distribution (observations of 20-200 words). Not a timed test:
timings on a shared machine are noisy, compare the ratios of one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import add_model_args, build_trainer, forward_args, load_average, measure, run_workers  # noqa: E402


def worker(args) -> dict:
    from benchmarks.agent_data import agent_pairs

    rows = agent_pairs(args.batch * (args.steps + args.warmup), seed=0)
    trainer = build_trainer(args.worker, args, rows)
    res = measure(trainer, args.warmup)
    tokens = sum(
        len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in trainer.train_dataset
    )
    res.update(trainer=args.worker, tokens_per_pair=tokens / len(trainer.train_dataset))
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-length", type=int, default=2048)
    add_model_args(p)
    p.add_argument("--worker", choices=["dmpo", "dpo"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    print(f"load average before: {load_average()}")
    results = run_workers(__file__, ("dmpo", "dpo"), args, args.repeats, forward_args(args))
    keys = ("step_time_s", "peak_rss_growth_mb", "peak_rss_mb")
    med = {w: {k: statistics.median(x[k] for x in v) for k in keys} for w, v in results.items()}
    for w, v in results.items():  # CPU time per step: less sensitive to other load on a shared machine
        med[w]["cpu_step_s"] = statistics.median(x["cpu_time_s"] / len(x["step_times"]) for x in v)
    print(f"load average after: {load_average()}")
    print(
        f"\nmodel: Llama hidden={args.hidden} layers={args.layers}; batch={args.batch} pairs; "
        f"{results['dmpo'][0]['tokens_per_pair']:.0f} tokens/pair (chosen+rejected, incl. prompt twice)"
    )
    print("| trainer | step time (s) | CPU time / step (s) | peak RSS growth (MB) | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for w in ("dpo", "dmpo"):
        m = med[w]
        print(
            f"| {w.upper()}Trainer | {m['step_time_s']:.3f} | {m['cpu_step_s']:.3f} | {m['peak_rss_growth_mb']:.0f} | "
            f"{m['peak_rss_mb']:.0f} |"
        )
    print("batch shapes of the first runs: " + "; ".join(f"{w} {results[w][0]['shapes']}" for w in ("dpo", "dmpo")))
    print(
        f"\nratio DMPO/DPO: step time {med['dmpo']['step_time_s'] / med['dpo']['step_time_s']:.3f}, "
        f"CPU time per step {med['dmpo']['cpu_step_s'] / med['dpo']['cpu_step_s']:.3f}, "
        f"peak RSS growth {med['dmpo']['peak_rss_growth_mb'] / max(med['dpo']['peak_rss_growth_mb'], 1e-9):.3f}, "
        f"peak RSS {med['dmpo']['peak_rss_mb'] / med['dpo']['peak_rss_mb']:.3f}"
    )


if __name__ == "__main__":
    main()
