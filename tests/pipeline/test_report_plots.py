"""The report's bar plots: a bar at 0.000 stays visible and every bar carries its value."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from dmpo_trl.pipeline import report


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plotting functions close, kept for inspection."""
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    return kept


def check_bars(ax, expected_heights):
    bars = [bar for container in ax.containers for bar in getattr(container, "patches", [])]
    assert [round(bar.get_height(), 6) for bar in bars] == expected_heights
    labels = [text.get_text() for text in ax.texts]
    assert labels == [f"{h:.3f}" for h in expected_heights]  # one value label per bar
    low = ax.get_ylim()[0]
    for bar in bars:  # outlined, and the axis starts below 0: a 0.000 bar is a visible line, not nothing
        assert bar.get_linewidth() > 0 and bar.get_edgecolor()[3] > 0
    assert low < 0


def test_results_plot_labels_every_bar_and_shows_zero_bars(tmp_path, figures):
    stat = {"mean": 0.0, "ci": [0.0, 0.0]}
    rows = {
        "base": {"success": stat, "score": stat},
        "sft": {"success": {"mean": 0.25, "ci": [0.1, 0.4]}, "score": stat},
    }
    report._plot_results(rows, tmp_path / "results.png")
    success, score = figures[0].axes
    check_bars(success, [0.0, 0.25])
    check_bars(score, [0.0, 0.0])


def test_length_bucket_plot_labels_every_bar_and_shows_zero_bars(tmp_path, figures):
    table = {"sft": {"4": 0.5, "5-6": 0.0}, "r1/noisy/dmpo": {"4": 0.0}}
    report._plot_buckets(["4", "5-6"], table, tmp_path / "length_buckets.png")
    check_bars(figures[0].axes[0], [0.5, 0.0, 0.0, 0.0])
