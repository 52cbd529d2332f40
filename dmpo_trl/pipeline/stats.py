"""Summary statistics of the held-out evaluation: 95% intervals by bootstrap over episodes.

Every run of a method (one per seed) is evaluated on the same held-out episodes. An episode's value is its outcome
averaged over the seeds (success in ``{0, 1/3, 2/3, 1}`` with 3 seeds), and the interval is the 2.5/97.5 percentile
of the mean over 10 000 resamples of the episodes (with replacement, a fixed RNG): it covers the variation from
which tasks were drawn, with the seeds' variation inside each episode's value. A comparison of two methods
resamples the per-episode differences (paired: same episodes). With one seed and binary success this is the usual
bootstrap interval of a proportion.

Next to the bootstrap, `mcnemar_exact` tests a paired comparison of binary success (per seed: one outcome per game
and arm, so the pairs are independent), and `min_detectable_effect` says which difference a test of `n` games can
find at all (two-sided alpha 0.05, power 0.8).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any


__all__ = [
    "bootstrap_mean_ci",
    "bucket_label",
    "mcnemar_exact",
    "min_detectable_effect",
    "paired_comparison",
    "per_episode",
    "summarize_runs",
]

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


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float]:
    """Exact (binomial) McNemar test of paired binary outcomes `a`, `b` (same games, same order).

    ``b01``: games only `a` solves, ``b10``: games only `b` solves; under "no difference" each discordant game is a
    fair coin, so the two-sided p-value is ``min(1, 2 * P(Binomial(b01 + b10, 1/2) <= min(b01, b10)))`` (1 without
    discordant games)."""
    if len(a) != len(b):
        raise ValueError(f"mcnemar_exact needs paired outcomes, got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = only_a + only_b
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n if n else 1.0
    return {"only_a": only_a, "only_b": only_b, "p": min(1.0, 2 * tail)}


_Z_ALPHA, _Z_POWER = 1.959964, 0.841621  # two-sided alpha 0.05, power 0.8


def min_detectable_effect(n: int, discordant_share: float) -> float:
    """Smallest difference in success rate that a paired test of `n` games detects with power 0.8 at two-sided alpha
    0.05, when a share `discordant_share` of the games have different outcomes in the two arms (normal
    approximation of McNemar's test: ``(z_0.975 + z_0.8) * sqrt(share / n)``; 0.5 share, the most a pair of rates
    near 0.5 allows, is a conservative default)."""
    if n <= 0:
        return float("nan")
    return (_Z_ALPHA + _Z_POWER) * math.sqrt(max(discordant_share, 0.0) / n)


def paired_comparison(a_evals: Sequence[dict[str, Any]], b_evals: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Arm A vs arm B on the same games: mean success difference with its paired bootstrap interval (episode values
    averaged over seeds), McNemar per seed (A's seed i against B's seed i; an arm with one run, like SFT, is
    reused), the share of discordant games and the minimum detectable effect at this number of games."""
    values_a, values_b = per_episode(a_evals, "success"), per_episode(b_evals, "success")
    games = [v for v in values_a if v in values_b]
    diffs = [values_a[v] - values_b[v] for v in games]
    lo, hi = bootstrap_mean_ci(diffs, seed=1)
    tests, discordant = [], []
    for i in range(max(len(a_evals), len(b_evals))):
        ea = {e["variation"]: bool(e["success"]) for e in a_evals[min(i, len(a_evals) - 1)]["episodes"]}
        eb = {e["variation"]: bool(e["success"]) for e in b_evals[min(i, len(b_evals) - 1)]["episodes"]}
        test = mcnemar_exact([ea[v] for v in games], [eb[v] for v in games])
        tests.append(test)
        discordant.append((test["only_a"] + test["only_b"]) / max(len(games), 1))
    share = sum(discordant) / max(len(discordant), 1)
    return {
        "games": len(games),
        "mean_a": sum(values_a[v] for v in games) / max(len(games), 1),
        "mean_b": sum(values_b[v] for v in games) / max(len(games), 1),
        "diff": {"mean": sum(diffs) / max(len(diffs), 1), "ci": [lo, hi]},
        "mcnemar": tests,
        "discordant_share": share,
        "mde": min_detectable_effect(len(games), share),
    }
