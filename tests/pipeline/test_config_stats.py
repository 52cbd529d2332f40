"""Pipeline recipes (quick overrides, unknown keys, flags) and the bootstrap intervals of the report."""

import random

import pytest
import yaml

from dmpo_trl.pipeline.config import config_from_dict, load_recipe, resolve_bf16
from dmpo_trl.pipeline.stats import (
    bootstrap_mean_ci,
    bucket_label,
    mcnemar_exact,
    min_detectable_effect,
    paired_comparison,
    per_episode,
    summarize_runs,
)
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
        ({"eval": {"split": "test"}}, "eval.split: a purpose: dev recipe"),
        ({"purpose": "tuning"}, "purpose"),
        ({"comparisons": ["noisy/dmpo-0.7 vs dpo"]}, "comparisons: 'noisy/dmpo-0.7 vs dpo'"),
        ({"comparisons": ["sft"]}, "A vs B"),
        ({"explore": {"temperature": 0.0, "num_rollouts": 4}}, "explore.num_rollouts must be 1"),
        ({"explore": {"games": "other"}}, "explore.games"),
        ({"train": {"warmup_ratio": 1.0}}, "warmup_ratio"),
        ({"methods": [{"name": "a", "settings": ["clean"]}]}, r"settings \['clean'\] must be among"),
        (
            {"settings": ["noisy", "clean"], "methods": [{"name": "a", "settings": ["clean"]}]},
            r"distinct names within each setting, got \[\] in 'noisy'",
        ),
        (
            {
                "settings": ["noisy", "clean"],
                "methods": [{"name": "a"}, {"name": "b", "settings": ["clean"]}],
                "comparisons": ["noisy/b vs sft"],
            },
            "comparisons: 'noisy/b vs sft'",
        ),
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
        assert cfg.train.max_pairs is None  # every pair is used
        assert cfg.train.batch_size * cfg.train.gradient_accumulation_steps >= 8 and cfg.train.epochs >= 2
        assert cfg.train.warmup_ratio > 0 and cfg.train.beta == 0.1
        assert (cfg.purpose == "test") == (cfg.eval.split == "test")  # tuning recipes never see the test games


def test_a_test_recipe_may_evaluate_on_test_and_lists_its_comparisons():
    cfg = config_from_dict(
        {
            "purpose": "test",
            "eval": {"split": "test"},
            "settings": ["clean"],
            "methods": [{"name": "dpo", "turn_weighting": "uniform"}, {"name": "dmpo", "gamma": 0.9}],
            "comparisons": ["clean/dmpo vs sft", "r1/clean/dmpo vs clean/dpo"],
        }
    )
    assert cfg.eval.split == "test" and len(cfg.comparisons) == 2
    per_setting = config_from_dict(
        {
            "settings": ["noisy", "clean"],
            "methods": [
                {"name": "d", "gamma": 0.9, "settings": ["clean"]},
                {"name": "d", "gamma": 0.5, "settings": ["noisy"]},
            ],
            "comparisons": ["clean/d vs sft", "noisy/d vs sft"],
        }
    )
    assert [m.trains_in("clean") for m in per_setting.methods] == [True, False]
    assert config_from_dict({}).purpose == "dev" and config_from_dict({}).eval.split == "dev"


def test_method_learning_rate_and_nll_weight_override_the_train_defaults():
    cfg = config_from_dict(
        {
            "train": {"learning_rate": 1e-4, "sft_weight": 0.0},
            "methods": [{"name": "a", "learning_rate": 3e-4, "sft_weight": 0.2}, {"name": "b"}],
        }
    )
    a, b = cfg.methods
    assert (a.lr(cfg.train), a.nll(cfg.train)) == (3e-4, 0.2) and (b.lr(cfg.train), b.nll(cfg.train)) == (1e-4, 0.0)
    default = config_from_dict({})
    assert default.explore.temperature == 0 and default.explore.num_rollouts == 1  # the authors' greedy rollout
    assert default.train.epochs >= 2 and default.train.warmup_ratio == 0.1


def test_mcnemar_exact_hand_computed():
    assert mcnemar_exact([1] * 5 + [0] * 3, [0] * 5 + [0] * 3) == {"only_a": 5, "only_b": 0, "p": 2 / 32}
    # 7 vs 2 discordant games: 2 * (C(9,0) + C(9,1) + C(9,2)) / 2^9 = 2 * 46 / 512
    a = [1] * 7 + [0] * 2 + [1] * 10
    b = [0] * 7 + [1] * 2 + [1] * 10
    assert mcnemar_exact(a, b)["p"] == pytest.approx(92 / 512)
    assert mcnemar_exact([1, 0], [0, 1])["p"] == 1.0 and mcnemar_exact([1, 1], [1, 1])["p"] == 1.0
    with pytest.raises(ValueError, match="paired"):
        mcnemar_exact([1], [1, 0])


def test_minimum_detectable_effect():
    # (1.959964 + 0.841621) * sqrt(0.3 / 150)
    assert min_detectable_effect(150, 0.3) == pytest.approx(2.801585 * 0.0447214, abs=1e-5)
    assert min_detectable_effect(600, 0.3) == pytest.approx(min_detectable_effect(150, 0.3) / 2)


def test_paired_comparison_per_seed_mcnemar_against_a_single_sft_run():
    sft = _eval([1, 0, 0, 0, 1, 0])
    arm = [_eval([1, 1, 1, 0, 1, 0]), _eval([1, 1, 0, 0, 0, 0])]
    c = paired_comparison(arm, [sft])
    assert c["games"] == 6 and c["mean_b"] == pytest.approx(2 / 6)
    assert c["mean_a"] == pytest.approx((1 + 1 + 0.5 + 0 + 0.5 + 0) / 6)
    assert c["diff"]["mean"] == pytest.approx(c["mean_a"] - c["mean_b"])
    # seed 0: only the arm solves games 1, 2; seed 1: only the arm game 1, only SFT game 4
    assert [(t["only_a"], t["only_b"]) for t in c["mcnemar"]] == [(2, 0), (1, 1)]
    assert c["discordant_share"] == pytest.approx((2 / 6 + 2 / 6) / 2)
    assert c["mde"] == pytest.approx(min_detectable_effect(6, 2 / 6))


def test_each_setting_has_its_own_eto_cap():
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
    path.write_text(yaml.safe_dump({"eval": {"split": "test"}}))  # a tuning recipe on the test games
    assert main(["pipeline", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "must not evaluate on the test split" in err
    assert main(["pipeline", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml" in capsys.readouterr().err
