"""``report.md`` of a pipeline run: every stage's figures, the held-out table with 95% intervals, the Fig. 4
analysis (success by gold-path length), what the models' actions are, and PNG plots next to it."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .stats import bucket_label, min_detectable_effect, paired_comparison, per_episode, summarize_runs


__all__ = ["arm_evals", "comparisons", "summarize", "write_report"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _groups(results: dict[str, Any]) -> dict[tuple[int, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in results["runs"]:
        groups[(run["round"], run["setting"], run["method"])].append(run)
    return groups


def _baseline_method(results: dict[str, Any]) -> str | None:
    return next((m["name"] for m in results["config"]["methods"] if m["turn_weighting"] == "uniform"), None)


def arm_evals(results: dict[str, Any], arm: str, games: str = "heldout") -> list[dict[str, Any]]:
    """The eval results of arm `arm` (``sft``, ``base``, ``<setting>/<method>`` = round 1, ``r<k>/<setting>/<method>``),
    one per seed; `games` ``"seen"`` gives their seen-set results."""
    if arm in ("sft", "base"):
        evals = [results["evals"][arm]]
    else:
        parts = arm.split("/")
        rnd, setting, method = (1, *parts) if len(parts) == 2 else (int(parts[0][1:]), *parts[1:])
        evals = [r["eval"] for r in _groups(results).get((rnd, setting, method), [])]
    return [e["seen"] for e in evals] if games == "seen" else evals


def comparisons(results: dict[str, Any], games: str = "heldout") -> list[dict[str, Any]]:
    """The recipe's pre-registered comparisons (``"A vs B"``), each a `paired_comparison` of A's and B's runs."""
    out = []
    for spec in results["config"].get("comparisons") or []:
        a, b = (side.strip() for side in spec.split(" vs "))
        out.append(
            {"comparison": spec, **paired_comparison(arm_evals(results, a, games), arm_evals(results, b, games))}
        )
    return out


def _method_lines(cfg: dict[str, Any]) -> list[str]:
    train = cfg["train"]
    lines = []
    for m in cfg["methods"]:
        lr = train["learning_rate"] if m.get("learning_rate") is None else m["learning_rate"]
        nll = train.get("sft_weight", 0.0) if m.get("sft_weight") is None else m["sft_weight"]
        weights = {
            "uniform": "multi-turn DPO (every action weight 1)",
            "dmpo": f"DMPO, the derivation's phi, gamma {m['gamma']}",
            "dmpo_eq16": f"DMPO with the paper's printed Eq. 16 weights, gamma {m['gamma']}",
        }[m["turn_weighting"]]
        extra = f"; + NLL on the chosen actions, weight {nll:g}: **a departure from the paper**" if nll else ""
        where = f" ({', '.join(m['settings'])})" if m.get("settings") else ""
        lines.append(f"- `{m['name']}`{where}: {weights}; learning rate {lr:g}{extra}")
    return lines


def _comparison_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| comparison | games | A | B | A - B (95% paired bootstrap) | McNemar per seed (only A / only B, p) | "
        "discordant | MDE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        tests = "; ".join(f"{t['only_a']}/{t['only_b']}, p={t['p']:.3g}" for t in c["mcnemar"])
        lines.append(
            f"| {c['comparison']} | {c['games']} | {c['mean_a']:.3f} | {c['mean_b']:.3f} | {_fmt(c['diff'])} | "
            f"{tests} | {c['discordant_share']:.2f} | {c['mde']:.3f} |"
        )
    return lines


def summarize(results: dict[str, Any], games: str = "heldout") -> dict[str, Any]:
    """The table rows: base, SFT, and each (round, setting, method) with intervals (and the difference to the
    setting's multi-turn DPO run, when there is one); `games` ``"seen"``: on the seen set."""

    def pick(ev: dict[str, Any]) -> dict[str, Any]:
        return ev["seen"] if games == "seen" else ev

    rows: dict[str, Any] = {}
    for name in ("base", "sft"):
        if name in results["evals"]:
            rows[name] = summarize_runs([pick(results["evals"][name])])
    sft_evals = [pick(results["evals"]["sft"])]
    baseline = _baseline_method(results)
    groups = _groups(results)
    for (rnd, setting, method), runs in sorted(groups.items()):
        evals = [pick(r["eval"]) for r in runs]
        ref = groups.get((rnd, setting, baseline)) if baseline and method != baseline else None
        row = summarize_runs(evals, [pick(r["eval"]) for r in ref] if ref else sft_evals)
        row["pairs"] = [r["pairs"] for r in runs]
        row["compared_with"] = baseline if ref else "sft"
        rows[f"r{rnd}/{setting}/{method}"] = row
    return rows


def _fmt(stat: dict[str, Any]) -> str:
    lo, hi = stat["ci"]
    return f"{stat['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def _buckets(results: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, float]], dict[str, int]]:
    """Fig. 4: success per gold-length bucket for SFT and every round/setting/method."""
    gold = {int(v): n for v, n in results["heldout_gold_lengths"].items()}
    bounds = results["config"]["length_buckets"]
    labels = sorted({bucket_label(n, bounds) for n in gold.values()}, key=lambda s: int(s.strip(">").split("-")[0]))
    counts = Counter(bucket_label(n, bounds) for n in gold.values())
    table: dict[str, dict[str, float]] = {}
    sources = {"sft": [results["evals"]["sft"]]}
    sources.update(
        {f"r{r}/{s}/{m}": [x["eval"] for x in runs] for (r, s, m), runs in sorted(_groups(results).items())}
    )
    for name, evals in sources.items():
        values = per_episode(evals, "success")
        by: dict[str, list[float]] = defaultdict(list)
        for v, x in values.items():
            if v in gold:
                by[bucket_label(gold[v], bounds)].append(x)
        table[name] = {b: sum(xs) / len(xs) for b, xs in by.items()}
    return labels, table, dict(counts)


def _plot_results(rows: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(names) * 2), 3.8))
    for ax, key in zip(axes, ("success", "score"), strict=True):
        means = [rows[n][key]["mean"] for n in names]
        lo = [rows[n][key]["mean"] - rows[n][key]["ci"][0] for n in names]
        hi = [rows[n][key]["ci"][1] - rows[n][key]["mean"] for n in names]
        # an outline keeps a bar at 0.000 visible (a line above the axis); every bar carries its value
        bars = ax.bar(
            range(len(names)),
            means,
            yerr=[lo, hi],
            capsize=3,
            color="tab:blue",
            alpha=0.8,
            edgecolor="tab:blue",
            lw=1.5,
        )
        ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set(title=f"held-out {key} (95% interval)", ylim=(-0.03, 1.12))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_buckets(labels, table, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / max(len(table), 1)
    for i, (name, values) in enumerate(table.items()):
        x = [j + i * width for j in range(len(labels))]
        bars = ax.bar(x, [values.get(b, 0.0) for b in labels], width, label=name, lw=1.5)
        for bar in bars:  # an outline in the bar's colour keeps a bar at 0.000 visible
            bar.set_edgecolor(bar.get_facecolor())
        ax.bar_label(bars, fmt="%.3f", padding=1, fontsize=6, rotation=90)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels)
    ax.set(title="held-out success by gold-path length (Fig. 4)", xlabel="gold actions", ylim=(-0.03, 1.2))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_training(results: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    curve = results["sft"].get("loss_curve") or []
    axes[0].plot([p[0] for p in curve], [p[1] for p in curve], marker=".")
    axes[0].set(title="SFT loss (action tokens)", xlabel="step")
    seed0 = results["config"]["seeds"][0]
    for run in results["runs"]:
        if run["seed"] != seed0:
            continue
        label = f"r{run['round']}/{run['setting']}/{run['method']}"
        for ax, key in zip(axes[1:], ("loss", "rewards/margins"), strict=True):
            points = run["train"]["curves"].get(key) or []
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", ms=3, label=label)
    axes[1].axhline(0.6931, color="grey", ls=":", lw=1)
    axes[1].set(title=f"preference loss (seed {seed0})", xlabel="step")
    axes[2].set(title="implicit reward margin", xlabel="step")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _kinds_table(results: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, float]]]:
    sources: dict[str, Counter] = {}
    for name in ("base", "sft"):
        if name in results["evals"]:
            sources[name] = Counter(results["evals"][name]["action_kinds"])
    for (r, s, m), runs in sorted(_groups(results).items()):
        total: Counter = Counter()
        for run in runs:
            total.update(run["eval"]["action_kinds"])
        sources[f"r{r}/{s}/{m}"] = total
    sources["gold (expert)"] = Counter(results.get("gold_action_kinds", {}))
    kinds = [k for k, _ in sum(sources.values(), Counter()).most_common(8)]
    shares = {}
    for name, counts in sources.items():
        n = max(sum(counts.values()), 1)
        shares[name] = {k: counts.get(k, 0) / n for k in kinds}
    return kinds, shares


def write_report(out: str | Path, results: dict[str, Any], preamble: list[str] | None = None) -> Path:
    """Write ``report.md`` and its plots into `out` (`preamble`: Markdown lines to put first, e.g. a summary);
    returns the report's path."""
    out = Path(out)
    cfg = results["config"]
    rows = summarize(results)
    results["summary"] = rows
    _plot_results(rows, out / "results.png")
    labels, buckets, bucket_counts = _buckets(results)
    _plot_buckets(labels, buckets, out / "length_buckets.png")
    _plot_training(results, out / "training.png")
    gold = list(results["heldout_gold_lengths"].values())
    lines = [
        *(preamble or []),
        f"{'##' if preamble else '#'} Pipeline: {results.get('env_name', cfg['env'] + '/' + cfg['task'])}",
        "",
        f"Command: `{results['command']}`  ",
        f"Finished: {results['finished']}; machine: {results['machine']}; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in results['load_average'] or [])}; total {results['runtime_s']:.0f} s "
        f"({sum(1 for s in results['stage_log'] if s['cached'])} of {len(results['stage_log'])} stages from the cache).",
        "",
        f"Model `{results['model']}`; environment `{cfg['env']}` task `{cfg['task']}` {cfg['env_kwargs'] or ''}; "
        f"{len(results['variations']['sft'])} SFT variations, {len(results['variations']['explore'])} explored "
        f"({cfg['explore']['num_rollouts']} rollouts each at temperature {cfg['explore']['temperature']}), "
        f"{len(results['variations']['heldout'])} held-out variations (split `{cfg['eval']['split']}`, greedy, at most "
        f"{cfg['eval']['max_steps']} actions). Held-out gold path: mean {sum(gold) / max(len(gold), 1):.2f} actions, "
        f"lengths {dict(sorted(Counter(gold).items()))}. Seeds {cfg['seeds']}, settings {cfg['settings']}.",
        "",
        f"Purpose: `{cfg.get('purpose', 'dev')}` (held-out split `{cfg['eval']['split']}`). Explored games: "
        f"`{cfg['explore'].get('games', 'sft')}`. Preference training: {cfg['train']['epochs']:g} epochs, effective "
        f"batch {cfg['train']['batch_size'] * cfg['train']['gradient_accumulation_steps']} pairs, "
        f"{cfg['train'].get('lr_scheduler_type', 'constant')} schedule, warmup {cfg['train'].get('warmup_ratio', 0):g}, "
        f"beta {cfg['train']['beta']:g}. Methods:",
        "",
        *_method_lines(cfg),
        "",
    ]
    n_games = len(results["variations"]["heldout"])
    compared = comparisons(results)
    if cfg.get("comparisons"):
        lines += [
            "## Pre-registered comparisons",
            "",
            "Written in the recipe before the run (`comparisons:`); their results are in the next section.",
            "",
            *[f"{i + 1}. {c}" for i, c in enumerate(cfg["comparisons"])],
            "",
            f"Minimum detectable effect at {n_games} games (paired, two-sided alpha 0.05, power 0.8): "
            f"{min_detectable_effect(n_games, 0.2):.3f} when 20% of the games differ between two arms, "
            f"{min_detectable_effect(n_games, 0.3):.3f} at 30%, {min_detectable_effect(n_games, 0.5):.3f} at 50%.",
            "",
        ]
    lines += [
        "## Held-out results",
        "",
        "Success rate and mean score with 95% bootstrap intervals over the held-out episodes (each episode's value "
        "averaged over the seeds); `diff` is the paired difference to the multi-turn DPO run of the same setting "
        "(to SFT for DPO itself).",
        "",
        "| model | pairs per seed | success | score | diff success | diff score | mean steps | invalid actions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        d_s = row["success"].get("diff")
        d_c = row["score"].get("diff")
        lines.append(
            f"| {name} | {row.get('pairs', '-')} | {_fmt(row['success'])} | {_fmt(row['score'])} | "
            f"{_fmt(d_s) + ' vs ' + row['compared_with'] if d_s else '-'} | {_fmt(d_c) if d_c else '-'} | "
            f"{row['mean_steps']:.2f} | {row['invalid_action_rate']:.3f} |"
        )
    lines += ["", "![held-out results](results.png)", "", "Per-seed success rates:", ""]
    for name, row in rows.items():
        lines.append(f"- {name}: {', '.join(f'{x:.3f}' for x in row['success']['per_seed'])}")
    if compared:
        lines += ["", "### The pre-registered comparisons", "", *_comparison_table(compared)]
        lines += [
            "",
            "A - B: mean per-game success difference (each game's value averaged over the seeds) with its 95% paired "
            "bootstrap interval; McNemar: exact two-sided test per seed on the games only one arm solves; MDE: the "
            "minimum detectable effect at this number of games and the observed discordant share.",
        ]
    results["comparisons"] = compared
    if results["variations"].get("seen"):
        seen_rows = summarize(results, "seen")
        results["summary_seen"] = seen_rows
        lines += [
            "",
            f"## Seen games ({len(results['variations']['seen'])} training variations no stage used)",
            "",
            "| model | success | score | diff success | mean steps | invalid actions |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in seen_rows.items():
            d_s = row["success"].get("diff")
            lines.append(
                f"| {name} | {_fmt(row['success'])} | {_fmt(row['score'])} | "
                f"{_fmt(d_s) + ' vs ' + row['compared_with'] if d_s else '-'} | {row['mean_steps']:.2f} | "
                f"{row['invalid_action_rate']:.3f} |"
            )
        if cfg.get("comparisons"):
            lines += ["", *_comparison_table(comparisons(results, "seen"))]
    lines += [
        "",
        "## Success by gold-path length (the paper's Fig. 4)",
        "",
        "| model | " + " | ".join(f"{b} actions ({bucket_counts.get(b, 0)} episodes)" for b in labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for name, values in buckets.items():
        lines.append(f"| {name} | " + " | ".join(f"{values.get(b, float('nan')):.3f}" for b in labels) + " |")
    lines += ["", "![success by length](length_buckets.png)", "", "## What the models do", ""]
    kinds, shares = _kinds_table(results)
    lines += [
        "Share of held-out actions by first word:",
        "",
        "| model | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for name, share in shares.items():
        lines.append(f"| {name} | " + " | ".join(f"{share[k]:.2f}" for k in kinds) + " |")
    lines += ["", "Sample held-out rollouts (SFT):", ""]
    for s in results["evals"]["sft"]["samples"]:
        lines.append(f"- variation {s['variation']} ({'solved' if s['success'] else 'failed'}): {s['actions']}")
    sft = results["sft"]
    lines += [
        "",
        "## Stages",
        "",
        f"SFT: {sft['experts']} expert trajectories, {sft['data']['tokens']} tokens of which "
        f"{sft['data']['action_tokens']} action tokens carry loss ({sft['data']['truncated']} truncated); "
        f"{sft['train'].get('steps')} steps, loss {sft['train'].get('first_loss', float('nan')):.3f} -> "
        f"{sft['train'].get('last_loss', float('nan')):.3f}.",
        "",
        "| explore | rollouts | success | mean score | invalid actions | tasks solved by every rollout |",
        "|---|---|---|---|---|---|",
    ]
    for name, x in results["explore"].items():
        lines.append(
            f"| {name} | {x['rollouts']} | {x['success_rate']:.3f} | {x['mean_score']:.3f} | "
            f"{x['invalid_action_rate']:.3f} | {x['tasks_all_solved']} |"
        )
    lines += [
        "",
        "| pairs | pairs | tasks | lose | win | tie dropped | duplicate dropped | no bad action dropped | "
        "cut at first bad action | capped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in results["pairs"].items():
        s = p["stats"]
        lines.append(
            f"| {name} | {p['pairs']} | {p['tasks']} | {s['lose']} | {s['win']} | {s['tie_dropped']} | "
            f"{s['duplicate_dropped']} | {s.get('no_bad_action_dropped', 0)} | {s.get('rejected_cut', 0)} | "
            f"{s['rejected_capped']} |"
        )
    lines += [
        "",
        "| training run | pairs | lr | optimizer steps | loss first -> last | margin last | accuracy last | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        t = run["train"]["train"]
        lines.append(
            f"| seed{run['seed']}/r{run['round']}/{run['setting']}/{run['method']} | {run['train']['pairs']} | "
            f"{run['train'].get('learning_rate', '-')} | {run['train'].get('optimizer_steps', '-')} | {t.get('first_loss', float('nan')):.3f} -> {t.get('last_loss', float('nan')):.3f} | "
            f"{t.get('last_rewards/margins', float('nan')):.3f} | {t.get('last_rewards/accuracies', float('nan')):.2f} | "
            f"{run['train'].get('runtime_s') or 0:.0f} s |"
        )
    lines += [
        "",
        "![training](training.png)",
        "",
        "Stage times: wall clock, and CPU time of the pipeline's process (all threads; on a 2-core machine that no one "
        "else uses, wall clock is about CPU time / 2).",
        "",
        "| stage | wall | CPU | cached |",
        "|---|---|---|---|",
    ]
    for s in results["stage_log"]:
        cpu = f"{s['cpu_seconds']:.0f} s" if s.get("cpu_seconds") is not None else "-"
        lines.append(f"| {s['stage']} | {s['seconds']:.0f} s | {cpu} | {'yes' if s['cached'] else ''} |")
    wall = sum(s["seconds"] for s in results["stage_log"])
    cpu = sum(s.get("cpu_seconds") or 0.0 for s in results["stage_log"])
    lines.append(f"| all stages | {wall:.0f} s | {cpu:.0f} s | |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
