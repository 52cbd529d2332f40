"""The LM head alone: DMPO's action-position head vs TRL's fused head on CPU, forward + backward.

    python benchmarks/lm_head.py [--positions 8192] [--action-share 0.27] [--hidden 256] [--vocab 49152]

Random hidden states `(positions, hidden)`, a random head `(vocab, hidden)` and random targets. Printed: CPU seconds
(best of `--repeats`, process time, forward + backward of the summed log-probs) and peak resident memory growth of

- TRL's `ChunkedLogProbFunction` over every position, as TRL's fused head runs on CPU (4096 tokens x 32768 entries);
- the same on the action positions only (`--action-share` of them), and with a 4096-entry vocabulary tile;
- DMPO's `dmpo_trl.core.lm_head.action_log_probs` on the action positions (2048 x 4096 tiles), without and with the
  metric outputs (entropy, mean logit, top-1).

Each variant runs in a fresh process; peak memory is the growth during its first (untimed) run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import load_average, proc_status  # noqa: E402


VARIANTS = {
    "trl_all": "TRL fused head, every position (CPU: 4096 x 32768 tiles)",
    "trl_actions": "TRL fused head, action positions only",
    "trl_actions_4096": "TRL fused head, action positions, 4096-entry vocabulary tile",
    "dmpo": "DMPO action head (2048 x 4096 tiles)",
    "dmpo_metrics": "DMPO action head + entropy / mean logit / top-1",
}


def worker(args) -> dict:
    import torch
    from trl.kernels import ChunkedLogProbFunction

    from dmpo_trl.core import lm_head

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.positions if args.worker == "trl_all" else int(args.positions * args.action_share)
    hidden = torch.randn(n, args.hidden, requires_grad=True)
    weight = (torch.randn(args.vocab, args.hidden) * 0.05).requires_grad_()
    targets = torch.randint(0, args.vocab, (n,))

    def run(k=n):
        h, y = hidden[:k], targets[:k]
        if args.worker.startswith("trl"):
            chunk = 4096 if args.worker == "trl_actions_4096" else 32768
            out = ChunkedLogProbFunction.apply(h, weight, None, y, 1.0, chunk, None, 1.0, ("log_probs",))[0]
        else:
            extra = lm_head.LM_HEAD_METRICS if args.worker == "dmpo_metrics" else ()
            out = lm_head.action_log_probs(h, weight, None, y, ("log_probs", *extra))["log_probs"]
        out.sum().backward()
        hidden.grad = weight.grad = None

    run(8)  # libraries' one-off allocations (thread pools, kernels) before the memory is measured
    rss = proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    run()  # warm-up; the allocator keeps what it freed, so the peak is read on this first run
    peak = proc_status("VmHWM") - rss
    times = []
    for _ in range(args.repeats):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return {"cpu_s": min(times), "positions": n, "peak_growth_mb": peak / 2**20}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--positions", type=int, default=8192, help="positions of the batch (rows x length)")
    p.add_argument("--action-share", type=float, default=0.27, help="share of positions that are action tokens")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    print(f"load average before: {load_average()}")
    results = {}
    for kind in VARIANTS:
        cmd = [sys.executable, __file__, "--worker", kind]
        cmd += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "worker"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{kind} failed:\n{out.stderr[-3000:]}")
        results[kind] = json.loads(line[7:])
    print(f"load average after: {load_average()}")
    print(
        f"{args.positions} positions ({args.action_share:.0%} action tokens), hidden {args.hidden}, vocabulary "
        f"{args.vocab}, float32, {args.threads} threads; best of {args.repeats}"
    )
    print("| head | positions scored | CPU s (fwd + bwd) | vs TRL every position | peak RSS growth (MB) |")
    print("| --- | --- | --- | --- | --- |")
    base = results["trl_all"]["cpu_s"]
    for kind, label in VARIANTS.items():
        r = results[kind]
        print(
            f"| {label} | {r['positions']} | {r['cpu_s']:.2f} | {base / r['cpu_s']:.1f}x | {r['peak_growth_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
