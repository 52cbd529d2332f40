"""What computing the reference scores once saves: online reference vs precomputed (empty store) vs a later run.

    python benchmarks/reference_cache.py [--pairs 16] [--epochs 2] [--batch 2] [--max-length 2048] [--scale 1]

Three runs of the same training (the suite's tiny Llama and vocabulary, `benchmarks.agent_data.scaled_pairs`), each
in a fresh process:

- ``online``: ``precompute_ref_log_probs=False``, the reference runs in every step of every epoch;
- ``cold``: the default (``None``: precompute, as the run covers every pair) with an empty reference-score store;
- ``warm``: the same again with the store the cold run filled (a later run on the same pairs, e.g. another `beta`).

Printed per run: reference forwards (batches) run, CPU and wall seconds of building the trainer (tokenization and
the precompute) and of `train()`, and the total, with the saving relative to ``online``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, add_model_args, build_model, forward_args, load_average, load_tokenizer  # noqa: E402


def worker(args) -> dict:
    import torch
    from datasets import Dataset

    from benchmarks.agent_data import scaled_pairs
    from dmpo_trl import DMPOConfig, DMPOTrainer

    torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.tokenizer)
    model = build_model(args, tok)
    forwards = []
    original = DMPOTrainer._ref_per_token_logps  # every reference pass: in the step and in the precompute

    def counting(self, model, inputs):
        forwards.append(1)
        return original(self, model, inputs)

    DMPOTrainer._ref_per_token_logps = counting
    config = DMPOConfig(
        output_dir=tempfile.mkdtemp(prefix="dmpo_ref_bench_"),
        per_device_train_batch_size=args.batch,
        num_train_epochs=args.epochs,
        max_length=args.max_length,
        learning_rate=1e-5,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        logging_steps=10_000,
        disable_tqdm=True,
        seed=0,
        gamma=0.7,
        precompute_ref_log_probs=False if args.worker == "online" else None,
        ref_cache_dir=args.store,
    )
    rows = scaled_pairs(args.pairs, seed=0, scale=args.scale)
    t, c = time.perf_counter(), time.process_time()
    trainer = DMPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tok)
    init = (time.perf_counter() - t, time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    trainer.train()
    train = (time.perf_counter() - t, time.process_time() - c)
    return {"init": init, "train": train, "forwards": len(forwards), "precompute": trainer.precompute_ref_logps}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=["online", "cold", "warm"], help=argparse.SUPPRESS)
    add_model_args(p)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    store = tempfile.mkdtemp(prefix="dmpo_ref_store_")
    print(f"load average before: {load_average()}")
    results = {}
    for mode in ("online", "cold", "warm"):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            mode,
            f"--store={store}",
            *forward_args(args, ("worker", "store")),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"})
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{mode} failed:\n{out.stderr[-3000:]}")
        results[mode] = json.loads(line[7:])
        print(f"{mode}: {results[mode]}", flush=True)
    print(f"load average after: {load_average()}")
    print(
        f"{args.pairs} pairs x {args.epochs} epochs, batch {args.batch}, max_length {args.max_length}, scale "
        f"{args.scale:g}; model Llama hidden={args.hidden} layers={args.layers}, tokenizer {args.tokenizer}"
    )
    print(
        "| run | precomputed | reference forwards | build CPU s | train() CPU s | total CPU s | total vs online | "
        "total wall s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    base = sum(results["online"][k][1] for k in ("init", "train"))
    for mode, r in results.items():
        cpu = r["init"][1] + r["train"][1]
        wall = r["init"][0] + r["train"][0]
        print(
            f"| {mode} | {r['precompute']} | {r['forwards']} | {r['init'][1]:.1f} | {r['train'][1]:.1f} | "
            f"{cpu:.1f} | {cpu / base:.2f}x | {wall:.1f} |"
        )


if __name__ == "__main__":
    main()
