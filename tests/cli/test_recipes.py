"""Recipes parse and carry the intended settings; every launch line in the docs names files that exist and keeps the
global batch the recipe is sized for; the docs' memory table is the formula's output."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

from dmpo_trl.cli import build_parser
from dmpo_trl.cli.launch import resolve_accelerate_config
from dmpo_trl.cli.train import parse_args
from tests.cli.helpers import REPO_ROOT


RECIPES = sorted((REPO_ROOT / "recipes").glob("*/dmpo/*.yaml"))
PAPER = sorted(p for p in RECIPES if p.parts[-3] in {"llama-2-7b-chat", "mistral-7b-instruct-v0.2"})
DOCS = [REPO_ROOT / "recipes" / "README.md", REPO_ROOT / "docs" / "launching.md", REPO_ROOT / "README.md"]
# Paths under runs/ are the docs' own scratch outputs (gitignored), created by a command in the same code block.
SCRATCH = "runs/"
GPUS_PER_NODE = 8  # scripts/slurm/dmpo.sbatch's default


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _parse(recipe: Path, *flags: str):
    # --use_cpu: the bf16 recipes are validated on this CPU machine (TrainingArguments refuses bf16 without a device)
    return parse_args(["--config", str(recipe), *flags, "--use_cpu", "true"])


# ------------------------------------------------------------------------------------------ recipe files
def test_recipe_set_is_complete():
    names = {_rel(p) for p in RECIPES}
    for model in ("llama-2-7b-chat", "mistral-7b-instruct-v0.2"):
        for task in ("webshop", "sciworld", "alfworld"):
            assert f"recipes/{model}/dmpo/{task}.yaml" in names
    for variant in ("full", "lora", "qlora"):
        assert f"recipes/qwen2.5-7b-instruct/dmpo/{variant}.yaml" in names
    assert "recipes/smollm2-135m-instruct/dmpo/cpu.yaml" in names


@pytest.mark.parametrize("recipe", RECIPES, ids=_rel)
def test_recipe_parses_into_the_dataclasses(recipe):
    raw = yaml.safe_load(recipe.read_text())
    script_args, training_args, model_args = _parse(recipe)
    assert model_args.model_name_or_path == raw["model_name_or_path"]
    assert training_args.gamma == raw["gamma"] and training_args.beta == raw["beta"]
    assert training_args.output_dir == raw["output_dir"] and raw["output_dir"].startswith("outputs/")
    # data/ files are produced by a documented conversion; anything else ships with the repository
    assert script_args.data_files
    assert all(f.startswith("data/") or (REPO_ROOT / f).is_file() for f in script_args.data_files)
    assert training_args.report_to == [] or training_args.report_to == ["none"] or training_args.report_to == "none"


@pytest.mark.parametrize("recipe", PAPER, ids=_rel)
def test_paper_recipes_use_the_authors_settings(recipe):
    script_args, args, model_args = _parse(recipe)
    task = recipe.stem
    assert model_args.model_name_or_path in {"meta-llama/Llama-2-7b-chat-hf", "mistralai/Mistral-7B-Instruct-v0.2"}
    assert (args.beta, args.gamma, args.learning_rate) == (0.1, 0.7, 1e-6)
    assert str(args.lr_scheduler_type.value) == "constant_with_warmup" and args.warmup_steps == 0.1
    assert (args.num_train_epochs, args.max_steps, args.max_length) == (3, -1, 4096)
    assert args.bf16 and args.loss_type == ["sigmoid"] and not model_args.use_peft
    assert script_args.data_files == [f"data/eto/{task}_pm.jsonl"]


def test_current_model_variants():
    root = REPO_ROOT / "recipes" / "qwen2.5-7b-instruct" / "dmpo"
    _, full_args, full = _parse(root / "full.yaml")
    _, lora_args, lora = _parse(root / "lora.yaml")
    _, qlora_args, qlora = _parse(root / "qlora.yaml")
    assert not full.use_peft and lora.use_peft and qlora.use_peft
    assert not lora.load_in_4bit and qlora.load_in_4bit and qlora.bnb_4bit_quant_type == "nf4"
    assert lora.lora_target_modules == qlora.lora_target_modules == "all-linear"
    assert {full_args.hub_model_id, lora_args.hub_model_id, qlora_args.hub_model_id} == {
        "your-username/Qwen2.5-7B-Instruct-DMPO",
        "your-username/Qwen2.5-7B-Instruct-DMPO-LoRA",
        "your-username/Qwen2.5-7B-Instruct-DMPO-QLoRA",
    }


def test_recipe_overrides_win_and_unknown_keys_fail(tmp_path):
    recipe = REPO_ROOT / "recipes" / "llama-2-7b-chat" / "dmpo" / "webshop.yaml"
    _, args, _ = _parse(recipe, "--gamma", "0.9", "--gradient_accumulation_steps", "4")
    assert (args.gamma, args.gradient_accumulation_steps, args.beta) == (0.9, 4, 0.1)
    bad = tmp_path / "typo.yaml"
    bad.write_text(recipe.read_text() + "gama: 0.5\n")
    with pytest.raises(ValueError, match="gama"):
        _parse(bad)


# ------------------------------------------------------------------------------------------ launch lines in docs
def _code_lines(doc: Path) -> list[str]:
    """Command lines of the ```bash / ```sh blocks (continuations joined, comments dropped)."""
    blocks, current, lang = [], None, ""
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if lang in ("bash", "sh"):
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _launch_lines() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        if not doc.exists():
            continue
        for line in _code_lines(doc):
            tokens = shlex.split(line)
            if tokens[:2] in (["dmpo-trl", "train"], ["accelerate", "launch"]) or tokens[0] == "sbatch":
                found.append((f"{_rel(doc)}: {line}", tokens))
    return found


LAUNCH_LINES = _launch_lines()


def _value(tokens: list[str], *flags: str) -> str | None:
    for flag in flags:
        if flag in tokens:
            return tokens[tokens.index(flag) + 1]
    return None


def _split(tokens: list[str]) -> tuple[int, list[str]]:
    """(number of processes, the arguments `dmpo_trl.cli.train` receives) for one launch line."""
    if tokens[0] == "dmpo-trl":
        args, rest = build_parser().parse_known_args(tokens[1:])
        return (args.num_processes or 1 if args.accelerate_config else 1), rest
    if tokens[0] == "accelerate":
        target = tokens.index("-m") + 1
        assert tokens[target] == "dmpo_trl.cli.train"
        return int(_value(tokens, "--num_processes")), tokens[target + 1 :]
    nodes = int(re.search(r"--nodes=(\d+)", " ".join(tokens)).group(1))  # sbatch --nodes=N script RECIPE CONFIG ...
    script = next(i for i, t in enumerate(tokens) if t.endswith(".sbatch"))
    return nodes * GPUS_PER_NODE, ["--config", tokens[script + 1], *tokens[script + 3 :]]


def test_docs_have_launch_lines():
    docs = {label.split(":")[0] for label, _ in LAUNCH_LINES}
    assert {"recipes/README.md", "docs/launching.md"} <= docs
    assert len(LAUNCH_LINES) >= 15


@pytest.mark.parametrize("label, tokens", LAUNCH_LINES, ids=[label for label, _ in LAUNCH_LINES])
def test_launch_line_names_existing_files(label, tokens):
    for token in tokens:
        if re.search(r"\.(ya?ml|sh|sbatch|py)$", token) and not token.startswith(SCRATCH):
            assert (REPO_ROOT / token).is_file(), f"{label}: {token} does not exist"
    accelerate_config = _value(tokens, "--accelerate-config", "--accelerate_config")
    if accelerate_config:
        resolve_accelerate_config(accelerate_config)
    if tokens[0] == "sbatch":
        script = next(i for i, t in enumerate(tokens) if t.endswith(".sbatch"))
        resolve_accelerate_config(tokens[script + 2])
    if "-m" in tokens:
        assert importlib.util.find_spec(tokens[tokens.index("-m") + 1]) is not None
    processes, train_args = _split(tokens)
    recipe = _value(train_args, "--config")
    assert recipe, f"{label}: no --config"
    if not recipe.startswith(SCRATCH):
        _parse(REPO_ROOT / recipe, *[a for a in train_args if a not in ("--config", recipe)])  # flags are fields


def test_every_recipe_is_launched_in_the_docs_with_the_paper_global_batch():
    launched: dict[str, list[int]] = {}
    for _label, tokens in LAUNCH_LINES:
        processes, train_args = _split(tokens)
        recipe = _value(train_args, "--config")
        if recipe.startswith(SCRATCH):
            continue
        _, args, _ = _parse(REPO_ROOT / recipe, *[a for a in train_args if a not in ("--config", recipe)])
        launched.setdefault(recipe, []).append(
            args.per_device_train_batch_size * args.gradient_accumulation_steps * processes
        )
    for recipe in RECIPES:
        name = _rel(recipe)
        assert name in launched, f"{name} has no launch line in the docs"
        if "smollm2" not in name:  # the CPU quick start is a smoke run, not sized like the paper
            assert set(launched[name]) == {32}, f"{name}: global batches {launched[name]}"


def test_recipe_data_is_produced_by_a_documented_conversion():
    outputs = set()
    for line in _code_lines(REPO_ROOT / "recipes" / "README.md"):
        tokens = shlex.split(line)
        if tokens[:2] == ["dmpo-trl", "convert"]:
            positional = [
                t for i, t in enumerate(tokens[2:], 2) if not t.startswith("-") and not tokens[i - 1].startswith("-")
            ]
            outputs.add(positional[1])
    for recipe in PAPER:
        for data_file in yaml.safe_load(recipe.read_text())["data_files"]:
            assert data_file in outputs, f"{_rel(recipe)}: no `dmpo-trl convert ... {data_file}` line"


def test_memory_table_in_docs_is_the_formula_output():
    from dmpo_trl.cli.memory import table

    assert table(8) in (REPO_ROOT / "docs" / "launching.md").read_text()
