"""Summary statistics of the held-out evaluation: 95% intervals by bootstrap over episodes.

Every run of a method (one per seed) is evaluated on the same held-out episodes. An episode's value is its outcome
averaged over the seeds (success in ``{0, 1/3, 2/3, 1}`` with 3 seeds), and the interval is the 2.5/97.5 percentile
of the mean over 10 000 resamples of the episodes (with replacement, a fixed RNG): it covers the variation from
which tasks were drawn, with the seeds' variation inside each episode's value. A comparison of two methods
resamples the per-episode differences (paired: same episodes). With one seed and binary success this is the usual
bootstrap interval of a proportion.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


__all__ = ["bootstrap_mean_ci", "bucket_label", "per_episode", "summarize_runs"]

RESAMPLES = 10_000


def bootstrap_mean_ci(values: Sequence[float], *, seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float]:
    """2.5 and 97.5 percentiles of the bootstrap distribution of the mean of `values`."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    values = list(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[min(int(0.975 * resamples), resamples - 1)]


def per_episode(evals: Sequence[dict[str, Any]], key: str) -> dict[int, float]:
    """Variation -> `key` (``success`` / ``score``) averaged over the runs (seeds) in `evals` (eval stage results)."""
    sums: dict[int, list[float]] = {}
    for ev in evals:
        for ep in ev["episodes"]:
            sums.setdefault(ep["variation"], []).append(float(ep[key]))
    return {v: sum(xs) / len(xs) for v, xs in sorted(sums.items())}


def summarize_runs(evals: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]] | None = None) -> dict:
    """Mean, 95% interval and per-seed values of success and score; with `baseline`, the paired difference."""
    out: dict[str, Any] = {"seeds": len(evals)}
    for key in ("success", "score"):
        values = per_episode(evals, key)
        xs = list(values.values())
        lo, hi = bootstrap_mean_ci(xs)
        out[key] = {
            "mean": sum(xs) / max(len(xs), 1),
            "ci": [lo, hi],
            "per_seed": [sum(float(e[key]) for e in ev["episodes"]) / len(ev["episodes"]) for ev in evals],
        }
        if baseline is not None:
            base = per_episode(baseline, key)
            diffs = [values[v] - base[v] for v in values if v in base]
            dlo, dhi = bootstrap_mean_ci(diffs, seed=1)
            out[key]["diff"] = {"mean": sum(diffs) / max(len(diffs), 1), "ci": [dlo, dhi]}
    out["mean_steps"] = sum(e["metrics"]["mean_steps"] for e in evals) / len(evals)
    out["invalid_action_rate"] = sum(e["metrics"]["invalid_action_rate"] for e in evals) / len(evals)
    return out


def bucket_label(length: int, bounds: Sequence[int]) -> str:
    """The gold-length bucket of `length`: ``"<=b0"``, ``"b0+1..b1"``, ..., ``">b_last"``."""
    low = 1
    for bound in bounds:
        if length <= bound:
            return f"{low}-{bound}" if low != bound else f"{bound}"
        low = bound + 1
    return f">{bounds[-1]}" if bounds else "all"
