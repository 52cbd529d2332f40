"""Pipeline recipes (quick overrides, unknown keys, flags) and the bootstrap intervals of the report."""

import random

import pytest
import yaml

from dmpo_trl.pipeline.config import load_recipe, resolve_bf16
from dmpo_trl.pipeline.stats import bootstrap_mean_ci, bucket_label, per_episode, summarize_runs
from tests.cli.helpers import REPO_ROOT


PIPELINE_RECIPES = sorted((REPO_ROOT / "recipes").glob("*/pipeline/*.yaml"))


def test_recipe_quick_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "output_dir": "runs/x",
                "seeds": [0, 1, 2],
                "methods": [{"name": "dpo", "turn_weighting": "uniform"}, {"name": "dmpo", "gamma": 0.5}],
                "sft": {"episodes": 96},
                "quick": {"output_dir": "runs/x-quick", "seeds": [0], "sft": {"episodes": 8}},
            }
        )
    )
    full = load_recipe(path)
    assert full.seeds == [0, 1, 2] and full.sft.episodes == 96 and full.sft.epochs == 2.0
    assert [m.turn_weighting for m in full.methods] == ["uniform", "dmpo"] and full.methods[1].gamma == 0.5
    quick = load_recipe(path, quick=True, overrides={"output_dir": "elsewhere"})
    assert quick.seeds == [0] and quick.sft.episodes == 8 and quick.output_dir == "elsewhere"  # the flag wins


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"sft": {"epoch": 2}}, r"sft: unknown key\(s\) \['epoch'\]"),
        ({"methods": [{"name": "a"}, {"name": "a"}]}, "distinct names"),
        ({"methods": [{"name": "a", "turn_weighting": "linear"}]}, "turn_weighting"),
        ({"settings": ["dirty"]}, "settings"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_recipe_names_the_problem(tmp_path, values, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ValueError, match=match):
        load_recipe(path)


@pytest.mark.parametrize("recipe", PIPELINE_RECIPES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shipped_pipeline_recipes_load_with_and_without_quick(recipe):
    for quick in (False, True):
        cfg = load_recipe(recipe, quick=quick)
        assert cfg.explore.episodes <= cfg.sft.episodes


def test_shipped_experiment_recipe_is_the_documented_design():
    cfg = load_recipe(REPO_ROOT / "recipes" / "smollm2-135m-instruct" / "pipeline" / "experiment.yaml")
    assert len(cfg.seeds) >= 3 and cfg.eval.episodes >= 50 and set(cfg.settings) == {"noisy", "clean"}
    weightings = {(m.turn_weighting, m.gamma if m.turn_weighting == "dmpo" else None) for m in cfg.methods}
    assert ("uniform", None) in weightings and ("dmpo", 0.7) in weightings
    assert len({g for w, g in weightings if w == "dmpo"}) >= 2


def test_each_setting_has_its_own_eto_cap():
    from dmpo_trl.pipeline.config import config_from_dict

    cfg = config_from_dict({"explore": {"max_extra_rejected_turns": 5, "clean_max_extra_rejected_turns": 0}})
    assert cfg.explore.cap_for("noisy") == 5 and cfg.explore.cap_for("clean") == 0
    default = config_from_dict({}).explore
    assert default.cap_for("clean") == default.cap_for("noisy") == 5  # ETO's cap for both unless told otherwise


def test_bf16_setting():
    assert resolve_bf16(True) is True and resolve_bf16(False) is False
    assert isinstance(resolve_bf16(None), bool)


def test_bootstrap_interval_of_a_proportion():
    values = [1.0] * 30 + [0.0] * 20  # p = 0.6, n = 50: normal approximation 0.6 +- 0.136
    lo, hi = bootstrap_mean_ci(values)
    assert lo == pytest.approx(0.6 - 0.136, abs=0.03) and hi == pytest.approx(0.6 + 0.136, abs=0.03)
    assert bootstrap_mean_ci([1.0] * 10) == (1.0, 1.0)
    assert bootstrap_mean_ci(values) == bootstrap_mean_ci(values)  # a fixed RNG: reports reproduce


def _eval(successes):
    return {
        "episodes": [{"variation": v, "success": s, "score": float(s)} for v, s in enumerate(successes)],
        "metrics": {"mean_steps": 3.0, "invalid_action_rate": 0.1},
    }


def test_seeds_average_per_episode_and_paired_difference():
    rng = random.Random(0)
    a = [_eval([rng.random() < 0.7 for _ in range(40)]) for _ in range(3)]
    b = [_eval([rng.random() < 0.4 for _ in range(40)]) for _ in range(3)]
    per = per_episode(a, "success")
    assert len(per) == 40 and set(per.values()) <= {0.0, 1 / 3, 2 / 3, 1.0}
    row = summarize_runs(a, baseline=b)
    assert row["success"]["mean"] == pytest.approx(sum(per.values()) / 40)
    assert row["success"]["per_seed"] == [sum(e["success"] for e in ev["episodes"]) / 40 for ev in a]
    diff = row["success"]["diff"]
    assert diff["mean"] == pytest.approx(row["success"]["mean"] - summarize_runs(b)["success"]["mean"])
    assert diff["ci"][0] > 0  # 0.7 vs 0.4 over 3 x 40 episodes: clearly positive


def test_length_buckets():
    assert [bucket_label(n, [2, 4, 6]) for n in (1, 2, 3, 4, 6, 7, 24)] == [
        "1-2",
        "1-2",
        "3-4",
        "3-4",
        "5-6",
        ">6",
        ">6",
    ]
    assert bucket_label(4, [4, 5]) == "1-4" and bucket_label(5, [4, 5]) == "5"


def test_cli_reports_a_bad_recipe_in_one_line(tmp_path, capsys):
    from dmpo_trl.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 1}}))
    assert main(["pipeline", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key(s) ['lr']" in err and str(path) in err
    assert main(["pipeline", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml" in capsys.readouterr().err
