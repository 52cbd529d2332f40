"""DMPOTrainer vs TRL's DPOTrainer on the same multi-turn data and model: step time and peak memory ratios.

    python benchmarks/dmpo_vs_dpo.py [--steps 8] [--repeats 2] [--hidden 256] [--layers 4] [--max-length 1024]

Each measurement runs in its own process (so peak memory is not shared), alternating DMPO and DPO `--repeats`
times; the script prints the median step time and peak resident memory growth during training, and the ratios
DMPO / DPO. Not a timed test: timings on a shared machine are noisy, compare the ratios of one invocation.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def worker(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    sys.path.insert(0, ROOT)
    from benchmarks.agent_data import agent_pairs
    from dmpo_trl.testing import make_tokenizer, tiny_model

    torch.set_num_threads(args.threads)
    tok = make_tokenizer("qwen2_5")
    model = tiny_model(
        tok, hidden_size=args.hidden, intermediate_size=args.hidden * 4, num_hidden_layers=args.layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
    )
    ref_model = copy.deepcopy(model)  # both trainers get the same explicit frozen reference
    rows = agent_pairs(args.batch * (args.steps + args.warmup), seed=0)
    common = dict(
        output_dir=f"/tmp/dmpo_bench_{args.worker}", per_device_train_batch_size=args.batch,
        max_steps=args.steps + args.warmup, max_length=args.max_length, learning_rate=1e-5, report_to=[],
        save_strategy="no", use_cpu=True, bf16=False, gradient_checkpointing=False, logging_steps=10_000,
        disable_tqdm=True, seed=0,
    )
    if args.worker == "dmpo":
        from dmpo_trl import DMPOConfig, DMPOTrainer

        trainer = DMPOTrainer(model=model, ref_model=ref_model, args=DMPOConfig(gamma=0.7, **common), train_dataset=Dataset.from_list(rows),
                              processing_class=tok)
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, ref_model=ref_model, args=DPOConfig(**common), train_dataset=Dataset.from_list(rows),
                             processing_class=tok)

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer.add_callback(Timer())
    rss_before = _proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    trainer.train()
    peak = _proc_status("VmHWM")
    timed = times[args.warmup:]
    tokens = sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in trainer.train_dataset)
    return {
        "trainer": args.worker,
        "step_time_s": statistics.median(timed),
        "peak_rss_growth_mb": (peak - rss_before) / 2**20,
        "peak_rss_mb": peak / 2**20,
        "tokens_per_pair": tokens / len(trainer.train_dataset),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=["dmpo", "dpo"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    results = {"dmpo": [], "dpo": []}
    for r in range(args.repeats):
        for which in (("dmpo", "dpo") if r % 2 == 0 else ("dpo", "dmpo")):
            cmd = [sys.executable, __file__, "--worker", which] + [
                f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("worker", "repeats")
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{which} worker failed:\n{out.stderr[-3000:]}")
            res = json.loads(line[7:])
            results[which].append(res)
            print(f"run {r} {which}: step {res['step_time_s']:.3f}s, peak RSS growth {res['peak_rss_growth_mb']:.0f} MB")
    med = {w: {k: statistics.median(x[k] for x in v) for k in ("step_time_s", "peak_rss_growth_mb", "peak_rss_mb")}
           for w, v in results.items()}
    print(f"\nmodel: Llama hidden={args.hidden} layers={args.layers}; batch={args.batch} pairs; "
          f"{results['dmpo'][0]['tokens_per_pair']:.0f} tokens/pair (chosen+rejected, incl. prompt twice)")
    print("| trainer | step time (s) | peak RSS growth (MB) | peak RSS (MB) |")
    print("| --- | --- | --- | --- |")
    for w in ("dpo", "dmpo"):
        print(f"| {w.upper()}Trainer | {med[w]['step_time_s']:.3f} | {med[w]['peak_rss_growth_mb']:.0f} | {med[w]['peak_rss_mb']:.0f} |")
    print(f"\nratio DMPO/DPO: step time {med['dmpo']['step_time_s'] / med['dpo']['step_time_s']:.3f}, "
          f"peak RSS growth {med['dmpo']['peak_rss_growth_mb'] / max(med['dpo']['peak_rss_growth_mb'], 1e-9):.3f}, "
          f"peak RSS {med['dmpo']['peak_rss_mb'] / med['dpo']['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
