"""The last DPOTrainer gaps (issue 22): DPOTrainer and DMPOTrainer side by side on the same input.

- streamed datasets (`IterableDataset`) with precomputed reference log-probs: the same error, at construction and in
  `evaluate()`, and the same evaluation when nothing is precomputed;
- PEFT on a mixture-of-experts model whose LoRA targets the experts' parameters (`target_parameters`): the same
  adapters;
- tool observations on a template with no tool-call syntax (a plain ChatML template): rows whose observations are
  `tool` messages train, rows with tool calls are refused.
"""

import copy

import peft
import pytest
import torch
from datasets import Dataset, IterableDatasetDict
from packaging.version import Version
from peft import LoraConfig, get_peft_model
from transformers import GptOssConfig, GptOssForCausalLM
from trl import DPOConfig, DPOTrainer

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.testing import make_tokenizer, save_tiny_model

from .test_dpo_compat import base_kwargs, record_losses, rows


TRL_ITERABLE_ERROR = r"precompute_ref_log_probs.*not supported with IterableDataset"
BOTH = ((DPOConfig, DPOTrainer), (DMPOConfig, DMPOTrainer))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    save_tiny_model(path, make_tokenizer("llama3_1"), seed=0)
    return str(path)


def build(trainer_cls, config_cls, tmp_path, model, tokenizer=None, **kwargs):
    options = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("train_dataset", "eval_dataset", "peft_config")}
    if config_cls is DMPOConfig:
        options.setdefault("ref_cache_dir", "")  # no store outside tmp_path
    args = config_cls(**base_kwargs(tmp_path / trainer_cls.__name__, **options))
    tokenizer = tokenizer or make_tokenizer("llama3_1")
    return trainer_cls(model=model, args=args, processing_class=copy.deepcopy(tokenizer), **kwargs)


# ------------------------------------------------------------------ 1. IterableDataset + reference log-probs
def mapped():
    return Dataset.from_list(rows("conversational"))


def streamed():
    return mapped().to_iterable_dataset()


@pytest.mark.parametrize("iterable_as", ["train", "eval", "eval_dict", "eval_iterable_dataset_dict"])
def test_precompute_refuses_a_streamed_dataset_at_construction_as_dpotrainer(tmp_path, model_dir, iterable_as):
    data = {"train_dataset": mapped(), "eval_dataset": None}
    if iterable_as == "train":
        data["train_dataset"] = streamed()
    elif iterable_as == "eval":
        data["eval_dataset"] = streamed()
    elif iterable_as == "eval_dict":
        data["eval_dataset"] = {"held_out": mapped(), "streamed": streamed()}
    else:
        data["eval_dataset"] = IterableDatasetDict({"streamed": streamed()})
    messages = []
    for config_cls, trainer_cls in BOTH:
        with pytest.raises(ValueError, match=TRL_ITERABLE_ERROR) as err:
            build(trainer_cls, config_cls, tmp_path, model_dir, precompute_ref_log_probs=True, **data)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_precompute_refuses_a_streamed_dataset_in_evaluate_as_dpotrainer(tmp_path, model_dir):
    for config_cls, trainer_cls in BOTH:
        trainer = build(
            trainer_cls, config_cls, tmp_path, model_dir, precompute_ref_log_probs=True,
            train_dataset=mapped(), eval_dataset=mapped(),
        )  # fmt: skip
        assert "eval_loss" in trainer.evaluate()  # the precomputed map-style eval set
        for eval_dataset in (streamed(), {"streamed": streamed()}):
            with pytest.raises(ValueError, match=TRL_ITERABLE_ERROR):
                trainer.evaluate(eval_dataset)


def test_streamed_datasets_evaluate_as_in_dpotrainer_when_nothing_is_precomputed(tmp_path, model_dir):
    """DMPO's default (None) does not precompute with a streamed dataset (`resolve_precompute`): both trainers score
    the reference in every step and report the same evaluation."""
    results = []
    for config_cls, trainer_cls in BOTH:
        precompute = None if config_cls is DMPOConfig else False
        trainer = build(
            trainer_cls, config_cls, tmp_path, model_dir, precompute_ref_log_probs=precompute,
            train_dataset=streamed(), eval_dataset={"a": mapped(), "b": streamed()},
        )  # fmt: skip
        assert trainer.precompute_ref_logps is False
        trainer.train()  # moves the policy off the reference, so the rewards below are not all 0
        metrics = {**trainer.evaluate(), **trainer.evaluate(streamed())}
        results.append({k: v for k, v in metrics.items() if k.endswith(("_loss", "rewards/margins", "logps/chosen"))})
    dpo, dmpo = results
    assert set(dpo) == set(dmpo) and {"eval_a_loss", "eval_b_loss", "eval_loss"} <= set(dpo)
    assert dmpo == pytest.approx(dpo, rel=1e-6, abs=1e-6)  # DPOTrainer logs some means in float32
    assert dpo["eval_rewards/margins"] != 0


def test_default_precompute_names_itself_when_evaluate_gets_a_streamed_dataset(tmp_path, model_dir):
    """None precomputes for map-style datasets (float32 model); a streamed set given to `evaluate()` later is then
    refused with an error that names the default (DPOTrainer's default, False, never precomputes)."""
    trainer = build(
        DMPOTrainer, DMPOConfig, tmp_path, model_dir, model_init_kwargs={"dtype": torch.float32},
        train_dataset=mapped(), eval_dataset=mapped(),
    )  # fmt: skip
    assert trainer.args.precompute_ref_log_probs is None and trainer.precompute_ref_logps is True
    with pytest.raises(ValueError, match=r"`precompute_ref_log_probs=None` precomputes .* IterableDataset \(the eval"):
        trainer.evaluate(streamed())


# ------------------------------------------------------------------ 2. PEFT on a mixture-of-experts model
EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def tiny_gpt_oss():
    """A 2-layer GPT-OSS (4 experts, 2 per token) with the test tokenizer's vocabulary, built in code."""
    tok = make_tokenizer("llama3_1")
    config = GptOssConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=512,
        layer_types=["full_attention"] * 2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return GptOssForCausalLM(config).float()


@pytest.mark.parametrize("wrapped", [False, True], ids=["peft_config", "peft_model"])
def test_lora_on_moe_experts_gives_dpotrainers_adapters(tmp_path, wrapped):
    """LoRA on the experts' parameters (`target_parameters`), given as `peft_config` or as a `PeftModel`: the same
    adapters as DPOTrainer after construction and after training (TRL adds a frozen ``ref`` copy of a given adapter
    unless PEFT cannot hold two adapters on the same parameters), and the same losses."""
    base = tiny_gpt_oss()
    lora = LoraConfig(r=4, target_modules=[], target_parameters=EXPERTS)
    if wrapped:
        torch.manual_seed(1)
        base = get_peft_model(base, lora)
    adapters, losses = [], []
    for config_cls, trainer_cls in BOTH:
        kwargs = {} if wrapped else {"peft_config": copy.deepcopy(lora)}
        trainer = build(
            trainer_cls, config_cls, tmp_path, copy.deepcopy(base), model_init_kwargs=None,
            train_dataset=mapped(), **kwargs,
        )  # fmt: skip
        built = sorted(trainer.model.peft_config)
        record_losses(trainer)
        trainer.train()
        assert sorted(trainer.model.peft_config) == built
        adapters.append(built)
        losses.append(trainer.losses)
    assert adapters[1] == adapters[0]
    # TRL's rule: no copy of a given adapter on PEFT 0.17-0.19, which holds one adapter per `target_parameters`
    holds_copy = wrapped and Version(peft.__version__) >= Version("0.20.0")
    assert "default" in adapters[0] and ("ref" in adapters[0]) == holds_copy
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
    assert losses[0][0] != losses[0][-1]  # the adapter trained


# ------------------------------------------------------------------ 3. tool observations on a plain ChatML template
PLAIN_CHATML = (  # renders every message's content, tool messages included; no syntax for tool calls
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    """A tiny model and its tokenizer with a plain ChatML template."""
    tokenizer = copy.deepcopy(make_tokenizer("qwen2_5"))
    tokenizer.chat_template = PLAIN_CHATML
    path = tmp_path_factory.mktemp("chatml") / "model"
    save_tiny_model(path, tokenizer, seed=0)
    return str(path), tokenizer


def tool_rows(with_calls: bool = False) -> list[dict]:
    """8 agent pairs whose observations are `tool` messages (with `tool_calls` on the actions if `with_calls`)."""
    out = []
    for i in range(8):
        row = {"prompt": [{"role": "user", "content": f"Task: find the coin {i}."}]}
        for side, moves in (("chosen", ["look around", "take coin"]), ("rejected", [f"go north {i}", "wait"])):
            first = {"role": "assistant", "content": f"Action: {moves[0]}"}
            if with_calls:
                call = {"type": "function", "function": {"name": "act", "arguments": {"command": moves[0]}}}
                first["tool_calls"] = [call]
            observation = {"role": "tool", "content": f"Observation: you see a door {side} {i}."}
            row[side] = [first, observation, {"role": "assistant", "content": f"Action: {moves[1]}"}]
        out.append(row)
    return out


def test_tool_observations_train_on_a_template_without_tool_calls(tmp_path, chatml):
    """Rows whose observations are `tool` messages need the tool messages rendered, not tool calls: both trainers
    train on them; DMPO's weight is on the assistant actions only, token for token, never on the tool content."""
    model, tokenizer = chatml
    data = tool_rows()
    trainers = []
    for config_cls, trainer_cls in BOTH:
        trainer = build(trainer_cls, config_cls, tmp_path, model, tokenizer, train_dataset=Dataset.from_list(data))
        record_losses(trainer)
        trainer.train()
        assert trainer.losses[0] != trainer.losses[-1]
        trainers.append(trainer)
    dmpo = trainers[1].train_dataset
    assert len(dmpo) == len(data)
    for row, example in zip(data, dmpo, strict=True):
        for side in ("chosen", "rejected"):
            ids, turns = example[f"{side}_ids"], example[f"{side}_turn_ids"]
            actions = [m["content"] for m in row[side] if m["role"] == "assistant"]
            for t, action in enumerate(actions):  # each action: one contiguous span, its text and end of turn
                where = [k for k, turn in enumerate(turns) if turn == t]
                assert where == list(range(where[0], where[-1] + 1))
                assert tokenizer.decode([ids[k] for k in where]) == action + "<|im_end|>"
            assert set(turns) == {-1, *range(len(actions))}
            unweighted = tokenizer.decode([i for i, turn in zip(ids, turns, strict=True) if turn < 0])
            assert row[side][1]["content"] in unweighted  # the tool content is rendered, with no weight


def test_tool_calls_on_a_template_without_tool_calls_are_still_refused(tmp_path, chatml):
    """A row with tool calls needs them rendered: DPOTrainer trains without them, DMPO refuses the row."""
    model, tokenizer = chatml
    data = Dataset.from_list(tool_rows(with_calls=True))
    build(DPOTrainer, DPOConfig, tmp_path, model, tokenizer, train_dataset=data)  # drops the calls silently
    with pytest.raises(DMPODataError, match="the chat template drops tool calls or tool results") as err:
        build(DMPOTrainer, DMPOConfig, tmp_path, model, tokenizer, train_dataset=data)
    assert (err.value.row, err.value.side) == (0, "chosen")
