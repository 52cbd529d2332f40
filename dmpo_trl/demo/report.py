"""Plots and the Markdown report of the main job (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .turn_rewards import mean_by_turn


__all__ = ["plot_success", "plot_training", "plot_turn_rewards", "write_report"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(log_history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(e["step"], float(e[key])) for e in log_history if key in e and "step" in e]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training(
    log_history: Sequence[dict[str, Any]], path: str | Path, success: Sequence[tuple[int, float]] = ()
) -> Path:
    """Loss and reward margin (and accuracy) over optimizer steps, from ``trainer.state.log_history``; with
    `success` (``(step, success rate)`` from `EnvEvalCallback`), a third panel with held-out success."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3 if success else 2, figsize=(15 if success else 10, 3.6))
    steps, loss = _series(log_history, "loss")
    axes[0].plot(steps, loss, marker="o", ms=3)
    axes[0].axhline(0.6931, color="grey", ls=":", lw=1, label="log 2 (start)")
    axes[0].set(title="DMPO loss", xlabel="step", ylabel="loss")
    axes[0].legend()
    steps, margin = _series(log_history, "rewards/margins")
    axes[1].plot(steps, margin, marker="o", ms=3, label="margin (chosen - rejected)")
    steps_acc, acc = _series(log_history, "rewards/accuracies")
    if acc:
        axes[1].plot(steps_acc, acc, marker=".", ms=3, alpha=0.6, label="accuracy")
    axes[1].set(title="implicit reward margin", xlabel="step")
    axes[1].legend()
    if success:
        axes[2].plot([p[0] for p in success], [p[1] for p in success], marker="o", color="tab:blue")
        axes[2].set(title="held-out success during training", xlabel="step", ylim=(-0.05, 1.05))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_turn_rewards(ratios: list[dict[str, list[float]]], beta: float, path: str | Path) -> Path:
    """Mean ``beta * r_t`` per turn index ``t`` for the chosen and rejected trajectories of held-out pairs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for side, color in (("chosen", "tab:green"), ("rejected", "tab:red")):
        points = mean_by_turn(ratios, side, scale=beta)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=color, label=side)
        for t, value, n in points:
            ax.annotate(f"n={n}", (t, value), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    ax.axhline(0, color="grey", lw=1, ls=":")
    ax.set(title="implicit reward per turn (held-out pairs)", xlabel="turn index t", ylabel="mean beta * r_t")
    ax.set_xticks(sorted({p[0] for s in ("chosen", "rejected") for p in mean_by_turn(ratios, s)}))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_success(before: dict[str, float], after: dict[str, float], path: str | Path) -> Path:
    """Bars: success rate, mean score and invalid-action rate before and after training."""
    plt = _pyplot()
    keys = ["success_rate", "mean_score", "invalid_action_rate"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.38
    xs = range(len(keys))
    b = ax.bar([x - width / 2 for x in xs], [before[k] for k in keys], width, label="before", color="tab:grey")
    a = ax.bar([x + width / 2 for x in xs], [after[k] for k in keys], width, label="after DMPO", color="tab:blue")
    ax.bar_label(b, fmt="%.2f", fontsize=8)
    ax.bar_label(a, fmt="%.2f", fontsize=8)
    ax.set_xticks(list(xs), ["success rate", "mean score", "invalid actions"])
    ax.set_ylim(0, 1.15)
    ax.set_title("held-out episodes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def write_report(path: str | Path, summary: dict[str, Any]) -> Path:
    """Write the Markdown report of a main-job run from its summary dict (see `dmpo_trl.demo.main_job`)."""
    s = summary
    before, after, gold = s["eval"]["before"], s["eval"]["after"], s["eval"].get("gold")
    metric_rows = []
    for key, label in [
        ("success_rate", "success rate"),
        ("mean_score", "mean score"),
        ("mean_steps", "mean steps"),
        ("invalid_action_rate", "invalid-action rate"),
    ]:
        metric_rows.append([label, _fmt(before[key]), _fmt(after[key]), _fmt(gold[key]) if gold else "-"])
    train = s["train"]
    runtime = (
        f"Finished: {s['finished']}; machine: {s['machine']}; total runtime **{s['runtime_s']:.0f} s** "
        f"({s['runtime_s'] / 60:.1f} min)."
    )
    heldout = (
        f"{before['episodes']:.0f} held-out episodes (unseen game seeds, disjoint from the training ones); at most "
        f"{s['settings']['eval_max_steps']} actions each. Gold path lengths of these episodes (actions: episodes): "
        f"{s['heldout_gold_lengths']}."
    )
    training = (
        f"{train['steps']} optimizer steps on {train['pairs']} pairs in {train['runtime_s']:.0f} s. "
        f"Loss {_fmt(train['first_loss'])} -> {_fmt(train['last_loss'])}; reward margin "
        f"{_fmt(train['first_margin'])} -> {_fmt(train['last_margin'])}; reward accuracy (last step) "
        f"{_fmt(train['last_accuracy'])}."
    )
    during = []
    if s.get("eval_during_training"):
        points = ", ".join(f"step {step}: {m['success_rate']:.3f}" for step, m in s["eval_during_training"])
        during = [f"Held-out success during training (EnvEvalCallback): {points}", ""]
    turns = (
        f"Mean implicit reward `beta * r_t` per turn index on {s['turn_rewards']['pairs']} held-out pairs "
        "(after training):"
    )
    parts = [
        "# DMPO main job report",
        "",
        f"Command: `{s['command']}`  ",
        runtime,
        "",
        "## Settings",
        "",
        _table([[k, f"`{v}`"] for k, v in s["settings"].items()], ["setting", "value"]),
        "",
        "## Held-out episodes (greedy decoding)",
        "",
        heldout,
        "",
        _table(metric_rows, ["figure", "before", "after DMPO", "gold actions (oracle)"]),
        "",
        "![success before/after](success.png)",
        "",
        "## Training",
        "",
        training,
        "",
        "![loss and reward margin](training.png)",
        "",
        *during,
        turns,
        "",
        _table(
            [[t, _fmt(c), _fmt(r)] for t, c, r in s["turn_rewards"]["table"]],
            ["turn t", "chosen", "rejected"],
        ),
        "",
        "![reward per turn](turn_rewards.png)",
        "",
        "## Stage times",
        "",
        _table([[k, f"{v:.0f} s"] for k, v in s["stage_times_s"].items()], ["stage", "time"]),
        "",
        "## Sample rollouts (first held-out episodes)",
        "",
    ]
    for sample in s["samples"]:
        parts.append(f"- variation {sample['variation']}: before {sample['before']} -> after {sample['after']}")
    parts += ["", s.get("note", ""), ""]
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
