"""The main job's per-turn reward plot (matplotlib, headless); the rest of its report is the pipeline's
(`dmpo_trl.pipeline.report`)."""

from __future__ import annotations

from pathlib import Path

from .turn_rewards import mean_by_turn


__all__ = ["plot_turn_rewards"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_turn_rewards(ratios: list[dict[str, list[float]]], beta: float, path: str | Path) -> Path:
    """Mean ``beta * r_t`` per turn index ``t`` for the chosen and rejected trajectories of the pairs in `ratios`
    (the main job passes a few of the model's training pairs)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for side, color in (("chosen", "tab:green"), ("rejected", "tab:red")):
        points = mean_by_turn(ratios, side, scale=beta)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=color, label=side)
        for t, value, n in points:
            ax.annotate(f"n={n}", (t, value), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    ax.axhline(0, color="grey", lw=1, ls=":")
    ax.set(title="implicit reward per turn (training pairs)", xlabel="turn index t", ylabel="mean beta * r_t")
    ax.set_xticks(sorted({p[0] for s in ("chosen", "rejected") for p in mean_by_turn(ratios, s)}))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
