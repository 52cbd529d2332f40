"""Launch plumbing without training: accelerate configs, the `train` command line, SLURM script, data, card."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import yaml

from dmpo_trl.cli import main as cli_main
from dmpo_trl.cli.launch import (
    ACCELERATE_CONFIGS_DIR,
    LaunchTopology,
    available_accelerate_configs,
    build_accelerate_command,
    resolve_accelerate_config,
)
from dmpo_trl.cli.recipe_data import describe_data_source, expand_data_files, load_preference_datasets
from dmpo_trl.cli.script_args import DMPOScriptArguments
from dmpo_trl.core.model_card import is_hub_id, write_card_section
from tests.cli.helpers import REPO_ROOT, subprocess_env


SHIPPED = {"ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}


# ------------------------------------------------------------------------------------------ accelerate configs
def test_shipped_configs_resolve_by_name_and_load_in_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    assert set(SHIPPED) <= set(available_accelerate_configs())
    for name, dist_type in SHIPPED.items():
        path = resolve_accelerate_config(name)
        assert path == ACCELERATE_CONFIGS_DIR / f"{name}.yaml"
        raw = yaml.safe_load(path.read_text())
        assert "num_processes" not in raw, f"{name}: process count must come from the command line"
        assert raw["mixed_precision"] == "no", f"{name}: precision must come from the recipe (bf16)"
        config = load_config_from_file(str(path))
        assert str(config.distributed_type).endswith(dist_type)
        assert config.num_processes == -1  # accelerate refuses to launch without --num_processes
    assert yaml.safe_load(resolve_accelerate_config("zero3").read_text())["deepspeed_config"]["zero_stage"] == 3
    assert yaml.safe_load(resolve_accelerate_config("zero2.yaml").read_text())["deepspeed_config"]["zero_stage"] == 2


def test_resolve_accelerate_config_paths_and_errors(tmp_path):
    custom = tmp_path / "mine.yaml"
    custom.write_text("distributed_type: MULTI_GPU\n")
    assert resolve_accelerate_config(str(custom)) == custom.resolve()
    with pytest.raises(FileNotFoundError, match="zero9.*ddp, fsdp, zero2, zero3"):
        resolve_accelerate_config("zero9")
    with pytest.raises(FileNotFoundError):
        resolve_accelerate_config(str(tmp_path / "missing.yaml"))


def test_built_command_is_what_accelerate_parses():
    from accelerate.commands.launch import launch_command_parser

    topo = LaunchTopology(
        num_processes=16,
        num_machines=2,
        machine_rank=1,
        main_process_ip="10.0.0.1",
        main_process_port=29555,
        mixed_precision="no",
    )
    cmd = build_accelerate_command(resolve_accelerate_config("zero3"), topo, ["--config", "r.yaml", "--beta", "0.2"])
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(cmd[3:])
    assert (args.num_processes, args.num_machines, args.machine_rank) == (16, 2, 1)
    assert (args.main_process_ip, args.main_process_port, args.mixed_precision) == ("10.0.0.1", 29555, "no")
    assert args.module and args.training_script == "dmpo_trl.cli.train"
    assert args.training_script_args == ["--config", "r.yaml", "--beta", "0.2"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_processes": 0}, "num_processes"),
        ({"num_processes": 8, "num_machines": 2}, "main_process_ip"),
        ({"num_processes": 8, "num_machines": 2, "machine_rank": 2, "main_process_ip": "h"}, "machine_rank"),
    ],
)
def test_topology_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LaunchTopology(**kwargs)


# ------------------------------------------------------------------------------------------ `dmpo-trl train`
def test_train_dry_run_forwards_recipe_flags_untouched(capsys):
    argv = [
        "train",
        "--accelerate-config",
        "zero2",
        "--num-processes",
        "4",
        "--dry-run",
        "--config",
        "x.yaml",
        "--learning_rate",
        "1e-5",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    ]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out.split()
    assert str(resolve_accelerate_config("zero2")) in out
    assert out[out.index("--num_processes") + 1] == "4"
    tail = out[out.index("dmpo_trl.cli.train") + 1 :]
    assert tail == ["--config", "x.yaml", "--learning_rate", "1e-5", "--lora_target_modules", "q_proj", "v_proj"]


def test_train_without_accelerate_runs_in_process_and_rejects_lone_launch_flags(capsys):
    assert cli_main(["train", "--dry-run", "--config", "x.yaml", "--num_train_epochs", "2"]) == 0
    assert capsys.readouterr().out.split() == [
        "python",
        "-m",
        "dmpo_trl.cli.train",
        "--config",
        "x.yaml",
        "--num_train_epochs",
        "2",
    ]
    with pytest.raises(SystemExit, match="need --accelerate-config"):
        cli_main(["train", "--num-processes", "2", "--config", "x.yaml"])
    with pytest.raises(SystemExit, match="zero9"):
        cli_main(["train", "--accelerate-config", "zero9", "--config", "x.yaml"])


def test_launch_flags_do_not_shadow_recipe_fields():
    """`dmpo-trl train` consumes its own flags; a dataclass field with the same name could never be set."""
    from trl import ModelConfig

    from dmpo_trl import DMPOConfig

    fields = {f.name for cls in (DMPOScriptArguments, DMPOConfig, ModelConfig) for f in dataclasses.fields(cls)}
    ours = {
        "accelerate_config",
        "num_processes",
        "num_machines",
        "machine_rank",
        "main_process_ip",
        "main_process_port",
        "mixed_precision",
        "dry_run",
        "config",
    }
    assert not fields & ours


def test_slurm_node_script_gives_each_node_its_rank(tmp_path):
    env = subprocess_env(
        DMPO_DRY_RUN="1",
        DMPO_RECIPE="recipes/qwen2.5-7b-instruct/dmpo/full.yaml",
        DMPO_ACCELERATE_CONFIG="zero3",
        GPUS_PER_NODE="8",
        MASTER_ADDR="node-a",
        MASTER_PORT="29601",
        SLURM_NNODES="4",
        SLURM_PROCID="3",
        PYTHON=sys.executable,
    )
    proc = subprocess.run(
        ["bash", "scripts/slurm/launch_node.sh", "--learning_rate", "2e-6"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    out = proc.stdout.split()
    pairs = {out[i]: out[i + 1] for i in range(len(out) - 1) if out[i].startswith("--")}
    assert pairs["--num_processes"] == "32" and pairs["--num_machines"] == "4" and pairs["--machine_rank"] == "3"
    assert pairs["--main_process_ip"] == "node-a" and pairs["--main_process_port"] == "29601"
    assert pairs["--config_file"].endswith("dmpo_trl/cli/accelerate_configs/zero3.yaml")
    assert out[-4:] == ["--resume_from_checkpoint", "auto", "--learning_rate", "2e-6"]
    subprocess.run(["bash", "-n", "scripts/slurm/dmpo.sbatch"], cwd=REPO_ROOT, check=True)


# ------------------------------------------------------------------------------------------ resume values
def test_resolve_resume(tmp_path):
    from dmpo_trl.cli.train import resolve_resume

    out = tmp_path / "run"
    assert resolve_resume(None, str(out)) is None
    assert resolve_resume("false", str(out)) is None
    assert resolve_resume("true", str(out)) is True and resolve_resume("last", str(out)) is True
    assert resolve_resume("auto", str(out)) is None  # nothing to resume: fresh start
    for step in (4, 12):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-16").mkdir()  # a save cut by a full disk: no trainer_state.json
    assert resolve_resume("auto", str(out)) == str(out / "checkpoint-12")
    assert resolve_resume(str(out / "checkpoint-4"), str(out)) == str(out / "checkpoint-4")
    with pytest.raises(FileNotFoundError, match="checkpoint-99"):
        resolve_resume(str(out / "checkpoint-99"), str(out))


# ------------------------------------------------------------------------------------------ data
ROW = {
    "prompt": [{"role": "user", "content": "task"}],
    "chosen": [
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "o"},
        {"role": "assistant", "content": "b"},
    ],
    "rejected": [{"role": "assistant", "content": "c"}],
}


def _rows(n):
    return [dict(ROW, task=i) for i in range(n)]


def test_local_json_jsonl_parquet_and_single_file_dataset_name(tmp_path):
    from datasets import Dataset

    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(3)) + "\n")
    (tmp_path / "b.json").write_text(json.dumps(_rows(2)))
    Dataset.from_list(_rows(4)).to_parquet(str(tmp_path / "c.parquet"))
    for spec, n in [
        ([str(tmp_path / "a.jsonl")], 3),
        ([str(tmp_path / "b.json")], 2),
        ([str(tmp_path / "c.parquet")], 4),
        ([str(tmp_path / "*.json*")], 5),
    ]:
        train, ev = load_preference_datasets(DMPOScriptArguments(data_files=spec), want_eval=False)
        assert len(train) == n and ev is None
        assert train[0]["chosen"][1] == {"role": "user", "content": "o"}
    train, _ = load_preference_datasets(DMPOScriptArguments(dataset_name=str(tmp_path / "c.parquet")), want_eval=False)
    assert len(train) == 4


def test_eval_sources_and_limits(tmp_path):
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(10)) + "\n")
    (tmp_path / "e.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(3)) + "\n")
    args = DMPOScriptArguments(data_files=[str(tmp_path / "t.jsonl")], eval_data_files=[str(tmp_path / "e.jsonl")])
    train, ev = load_preference_datasets(args, want_eval=True)
    assert (len(train), len(ev)) == (10, 3)
    args = DMPOScriptArguments(data_files=[str(tmp_path / "t.jsonl")], eval_split_size=0.2, max_train_samples=5)
    train, ev = load_preference_datasets(args, want_eval=True, seed=1)
    assert (len(train), len(ev)) == (5, 2)
    assert not {r["task"] for r in train} & {r["task"] for r in ev}
    with pytest.raises(ValueError, match="no evaluation data"):
        load_preference_datasets(DMPOScriptArguments(data_files=[str(tmp_path / "t.jsonl")]), want_eval=True)


def test_data_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        expand_data_files([str(tmp_path / "nope.jsonl")])
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ValueError, match="x.csv: unsupported data file: use one of .json, .jsonl, .parquet"):
        expand_data_files([str(tmp_path / "x.csv")])
    (tmp_path / "y.jsonl").write_text("{}\n")
    (tmp_path / "z.parquet").write_bytes(b"")
    # one reader for every format: files of different formats make one split
    assert expand_data_files([str(tmp_path / "y.jsonl"), str(tmp_path / "z.parquet")]) == [
        str(tmp_path / "y.jsonl"),
        str(tmp_path / "z.parquet"),
    ]
    with pytest.raises(ValueError, match="No training data"):
        load_preference_datasets(DMPOScriptArguments(), want_eval=False)
    with pytest.raises(ValueError, match="not both"):
        DMPOScriptArguments(data_files=["a.jsonl"], dataset_name="org/ds")
    with pytest.raises(ValueError, match="eval_split_size"):
        DMPOScriptArguments(data_files=["a.jsonl"], eval_split_size=1.5)


def test_hub_dataset_name_goes_to_load_dataset(monkeypatch):
    import datasets

    calls = {}

    def fake_load_dataset(path, **kwargs):
        calls["args"] = (path, kwargs)
        return datasets.DatasetDict(
            {"train": datasets.Dataset.from_list(_rows(3)), "test": datasets.Dataset.from_list(_rows(1))}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    args = DMPOScriptArguments(dataset_name="org/agent-pairs", dataset_config="webshop")
    train, ev = load_preference_datasets(args, want_eval=True)
    assert calls["args"] == ("org/agent-pairs", {"name": "webshop", "streaming": False})
    assert (len(train), len(ev)) == (3, 1)
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_preference_datasets(DMPOScriptArguments(dataset_name="org/x", dataset_train_split="dev"), want_eval=False)
    assert describe_data_source(args) == "org/agent-pairs"
    assert describe_data_source(DMPOScriptArguments(data_files=["/d/webshop.jsonl"])) == "webshop.jsonl"


# ------------------------------------------------------------------------------------------ model options
def test_quantization_needs_peft_and_model_init_kwargs_merge():
    from trl import ModelConfig

    from dmpo_trl import DMPOConfig
    from dmpo_trl.models import build_model_init_kwargs

    args = DMPOConfig(output_dir="o", use_cpu=True, bf16=False, model_init_kwargs={"low_cpu_mem_usage": True})
    kwargs = build_model_init_kwargs(ModelConfig(model_name_or_path="m", dtype="bfloat16"), args)
    assert kwargs == {"revision": "main", "trust_remote_code": False, "dtype": "bfloat16", "low_cpu_mem_usage": True}
    with pytest.raises(ValueError, match="use_peft"):
        build_model_init_kwargs(ModelConfig(model_name_or_path="m", load_in_4bit=True), args)


# ------------------------------------------------------------------------------------------ card
def test_card_section_is_idempotent_and_metadata_only_takes_hub_ids(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "---\ntags:\n- trl\n---\n\n# Card\n\nfine-tuned version of [None](https://huggingface.co/None).\n"
        "\n## Citations\n\nbib\n"
    )
    rows = [
        ("Trainer", "DMPOTrainer (gamma=0.7, beta=0.1)"),
        ("Schedule", "lr 1e-06"),
        ("Length", "3 epoch(s)"),
        ("Global batch size", "32 (8 process(es))"),
        ("Precision", "bf16"),
    ]
    for _ in range(2):
        write_card_section(str(readme), rows, base_model="meta-llama/Llama-2-7b-chat-hf", dataset="webshop_pm.jsonl")
    text = readme.read_text()
    assert text.count("## Run configuration") == 1
    assert text.index("## Run configuration") < text.index("## Citations")
    assert "| Trainer | DMPOTrainer (gamma=0.7, beta=0.1) |" in text
    assert "| Global batch size | 32 (8 process(es)) |" in text
    assert "[meta-llama/Llama-2-7b-chat-hf](https://huggingface.co/meta-llama/Llama-2-7b-chat-hf)" in text
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["base_model"] == "meta-llama/Llama-2-7b-chat-hf" and "dmpo" in meta["tags"]
    assert "datasets" not in meta  # a local file name is not a Hub dataset
    assert is_hub_id("org/name") and not is_hub_id("webshop.jsonl") and not is_hub_id(str(tmp_path))
    assert not is_hub_id(None)


# ------------------------------------------------------------------------------------------ memory formula
def test_memory_formula_by_hand():
    from dmpo_trl.cli.memory import adapter_bytes, full_finetune_bytes, table

    p = 7e9
    assert full_finetune_bytes(p, "ddp", 8) == pytest.approx(18 * p)  # 2 + 2 + 12 policy, 2 reference
    assert full_finetune_bytes(p, "zero1", 8) == pytest.approx((2 + 2 + 12 / 8 + 2) * p)
    assert full_finetune_bytes(p, "zero2", 8) == pytest.approx((2 + 14 / 8 + 2) * p)
    assert full_finetune_bytes(p, "zero3", 8) == pytest.approx(18 / 8 * p)
    assert adapter_bytes(p, 0.0, 1e6, quantized=False) == pytest.approx(2 * p + 16e6)
    nf4 = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes, 8-bit absmax per 64 weights, fp32 per 256 absmax blocks
    assert adapter_bytes(p, 1e9, 0.0, quantized=True) == pytest.approx(nf4 * 6e9 + 2 * 1e9)
    with pytest.raises(ValueError, match="zero4"):
        full_finetune_bytes(p, "zero4", 8)
    assert "| Llama-2-7B-Chat (6.74B) | 121.3 | 50.5 | 38.8 | 15.2 |" in table(8)


# ------------------------------------------------------------------------------------------ run comparison
def _fake_run(path, losses, weight):
    import torch
    from safetensors.torch import save_file

    path.mkdir()
    history = [{"loss": v, "step": i + 1} for i, v in enumerate(losses)] + [{"train_runtime": 1.0}]
    (path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    save_file({"w": torch.full((2, 2), weight)}, str(path / "model.safetensors"))
    return path


def test_compare_runs_reports_largest_differences(tmp_path, capsys):
    from dmpo_trl.cli.compare import compare_runs
    from dmpo_trl.cli.compare import main as compare_main

    a = _fake_run(tmp_path / "a", [0.69, 0.6, 0.5], 1.0)
    b = _fake_run(tmp_path / "b", [0.69, 0.6001, 0.5], 1.25)
    diff = compare_runs(a, b)
    assert diff.steps == 3 and diff.tensors == 1
    assert diff.max_loss_diff == pytest.approx(1e-4) and diff.max_weight_diff == pytest.approx(0.25)
    assert compare_main([str(a), str(b)]) == 1
    assert compare_main([str(a), str(b), "--loss-tol", "1e-3", "--weight-tol", "0.5"]) == 0
    assert "max |weight diff|: 0.25" in capsys.readouterr().out
    with pytest.raises(ValueError, match="logged 3 losses"):
        compare_runs(a, _fake_run(tmp_path / "c", [0.69], 1.0))


def test_module_entry_point_reaches_the_recipe_parser(tmp_path):
    """`python -m dmpo_trl.cli.train` (what `accelerate launch -m` runs) works from any directory, no path set."""
    env = subprocess_env()
    env.pop("PYTHONPATH")
    for cmd, cwd in (([sys.executable, "-m", "dmpo_trl.cli.train", "--help"], tmp_path),):
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout
        assert "--gamma" in out and "--data_files" in out and "--use_peft" in out


def test_accelerate_configs_ship_in_the_wheel_and_resolve_outside_the_repository(tmp_path):
    """A plain (non-editable) install finds `--accelerate-config zero3` by name, with no source tree around."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT / "dmpo_trl", src / "dmpo_trl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    env = subprocess_env()
    env.pop("PYTHONPATH")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
        env=env,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("dmpo_trl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"dmpo_trl/cli/accelerate_configs/{n}.yaml" for n in SHIPPED} <= names
    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)], env=env, check=True, capture_output=True
    )
    env["PYTHONPATH"] = str(site)
    code = "from dmpo_trl.cli.launch import resolve_accelerate_config as r; print(r('zero3'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == str(site / "dmpo_trl" / "cli" / "accelerate_configs" / "zero3.yaml")
