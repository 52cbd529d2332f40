"""DMPOTrainer as a drop-in DPOTrainer: the same short training with both, names swapped, nothing else.

For every DPOConfig option and every DPO dataset format, `run_both` trains a tiny float64 model (saved to disk, so
both trainers load the policy and the reference the same way) for two steps with `DPOConfig` + `DPOTrainer` and with
`DMPOConfig` + `DMPOTrainer` on the same keyword arguments, and compares every logged loss and reward. With one action
per side (T = 1) they must agree to 1e-6; on multi-turn data both must train. Llama 3.1's template is used for
conversational data because it ends an assistant turn with its end-of-turn token and nothing after it, so DPO's
completion tokens are DMPO's action tokens; ChatML's difference (the ``\\n`` after ``<|im_end|>``) is pinned in
`test_chatml_end_of_turn_rule_pins_both_tokenizations`.
"""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import TrainingArguments
from trl import DPOConfig, DPOTrainer

from dmpo_trl import DMPOConfig, DMPOTrainer
from dmpo_trl.core.config import KEEP_END_REASON
from dmpo_trl.core.objective import LOSS_TYPES
from dmpo_trl.testing import agent_pair, make_tokenizer, save_tiny_model


COMPARED = ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected")
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "search the shop",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
TASKS = ["find the coin", "open the door", "look around", "take the key", "go north", "read the note", "eat", "wait"]


def rows(fmt: str) -> list[dict]:
    """8 preference rows in one of DPO's dataset formats (multi_turn: DMPO's agent trajectories)."""
    out = []
    for i, task in enumerate(TASKS):
        good, bad = f" Action: {task} now.", f" Action: jump {i}."
        user = [{"role": "user", "content": f"Task: {task}."}]
        if fmt == "standard":
            out.append({"prompt": f"Task: {task}.", "chosen": good, "rejected": bad})
        elif fmt == "standard_implicit":
            out.append({"chosen": f"Task: {task}.{good}", "rejected": f"Task: {task}.{bad}"})
        elif fmt == "conversational":
            out.append({"prompt": user, "chosen": [asst(good)], "rejected": [asst(bad)]})
        elif fmt == "conversational_implicit":
            out.append({"chosen": user + [asst(good)], "rejected": user + [asst(bad)]})
        elif fmt == "tools":  # one action per side: a tool call against a text answer
            call = {"type": "function", "function": {"name": "search", "arguments": {"query": task}}}
            chosen = [{"role": "assistant", "content": "", "tool_calls": [call]}]
            out.append({"prompt": user, "chosen": chosen, "rejected": [asst(bad)], "tools": json.dumps([SEARCH])})
        elif fmt == "multi_turn":
            out.append(agent_pair(num_chosen=1 + i % 3, num_rejected=2 + i % 2))
        else:
            raise ValueError(fmt)
    return out


def asst(content: str) -> dict:
    return {"role": "assistant", "content": content.strip()}


class ExactLogProbs:
    """Float64 stand-in for TRL's `ChunkedLogProbFunction` (same call), for DPOTrainer and DMPOTrainer alike.

    TRL's kernel keeps its statistics in float32 whatever the model's dtype, so with it neither trainer is exact in
    float64; this one computes the full log-softmax in float64 (the tiny vocabulary makes that cheap)."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0, outputs=()):
        z = F.linear(hidden.double(), weight.double(), None if bias is None else bias.double()) * logit_scale
        if softcap is not None:
            z = softcap * torch.tanh(z / softcap)
        z = z / temperature
        logp = z.log_softmax(-1)
        with torch.no_grad():
            entropy = -(logp.exp() * logp).sum(-1) if "entropy" in outputs else None
            sq = torch.logsumexp(2 * logp, -1) if "log_sum_sq_probs" in outputs else None
            mean = z.mean(-1) if "mean_logits" in outputs else None
            top1 = z.argmax(-1) == targets if "is_top1" in outputs else None
        return logp.gather(1, targets[:, None]).squeeze(1).to(hidden.dtype), entropy, sq, mean, top1


@pytest.fixture(autouse=True)
def exact_lm_head(monkeypatch):
    import trl.trainer.utils

    monkeypatch.setattr(trl.trainer.utils, "_ChunkedLogProbFunction", ExactLogProbs)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = make_tokenizer("llama3_1")
    path = tmp_path_factory.mktemp("tiny") / "model"
    save_tiny_model(path, tok, seed=0)
    return str(path)


def base_kwargs(tmp_path, **options) -> dict:
    kw = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=5e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=7,
        model_init_kwargs={"dtype": torch.float64},
    )
    kw.update(options)
    return kw


def run_both(tmp_path, model_dir, fmt="standard", data=None, **options):
    """Train with DPOTrainer and with DMPOTrainer (same arguments); return both trainers."""
    dataset = Dataset.from_list(data if data is not None else rows(fmt))
    trainers = []
    for config_cls, trainer_cls, name in ((DPOConfig, DPOTrainer, "dpo"), (DMPOConfig, DMPOTrainer, "dmpo")):
        tok = make_tokenizer("llama3_1")
        args = config_cls(**base_kwargs(tmp_path / name, **options))
        trainer = trainer_cls(model=model_dir, args=args, train_dataset=dataset, processing_class=tok)
        record_losses(trainer)
        trainer.train()
        trainers.append(trainer)
    return trainers


def record_losses(trainer):
    """Keep every training loss in full precision (`Trainer` logs a float32 running mean)."""
    trainer.losses = []
    compute_loss = trainer.compute_loss

    def recording(*args, **kwargs):
        loss = compute_loss(*args, **kwargs)
        if trainer.model.training:
            trainer.losses.append(loss.detach().double().item())
        return loss

    trainer.compute_loss = recording


def assert_same_numbers(dpo, dmpo, tol=1e-6):
    """Every training loss (float64) and every logged reward and score agree to `tol`."""
    assert len(dpo.losses) == len(dmpo.losses) >= dpo.state.max_steps
    assert dmpo.losses == pytest.approx(dpo.losses, abs=tol)
    dpo_logs = [h for h in dpo.state.log_history if "loss" in h]
    dmpo_logs = [h for h in dmpo.state.log_history if "loss" in h]
    assert len(dpo_logs) == len(dmpo_logs) == dpo.state.max_steps
    for a, b in zip(dpo_logs, dmpo_logs, strict=True):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], abs=tol), (key, a[key], b[key])
    assert dpo_logs[0]["rewards/margins"] != dpo_logs[-1]["rewards/margins"]  # the model really trained


@pytest.mark.parametrize(
    "fmt", ["standard", "standard_implicit", "conversational", "conversational_implicit", "tools"]
)
def test_one_action_formats_train_to_dpos_numbers(tmp_path, model_dir, fmt):
    dpo, dmpo = run_both(tmp_path, model_dir, fmt)
    assert dpo.train_dataset["chosen_ids"] == dmpo.train_dataset["chosen_ids"]  # the very same tokens
    assert_same_numbers(dpo, dmpo)


def test_multi_turn_data_trains_with_both(tmp_path, model_dir):
    dpo, dmpo = run_both(tmp_path, model_dir, "multi_turn")
    for trainer in (dpo, dmpo):
        assert trainer.state.global_step == 2 and trainer.state.log_history[-1]["train_loss"] > 0
    assert dmpo.state.log_history[0]["turns/chosen"] > 1


OPTIONS = {
    **{f"loss_type={t}": dict(loss_type=[t], label_smoothing=1e-3 if t == "exo_pair" else 0.0) for t in LOSS_TYPES},
    "loss_type=MPO": dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]),
    "loss_weights": dict(loss_type=["sigmoid", "ipo"], loss_weights=[0.3, 0.7]),
    "label_smoothing+robust": dict(loss_type=["robust"], label_smoothing=0.2),
    "label_smoothing+aot": dict(loss_type=["aot"], label_smoothing=0.1),
    "beta": dict(beta=0.5),
    "discopop_tau": dict(loss_type=["discopop"], discopop_tau=0.3),
    **{f"f_divergence_type={k}": dict(f_divergence_type=k) for k in ("forward_kl", "js_divergence")},
    "f_alpha_divergence_coef": dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3),
    "f_divergence+ipo": dict(f_divergence_type="forward_kl", loss_type=["ipo"]),
    "ld_alpha": dict(ld_alpha=0.4),
    "ld_alpha+ipo": dict(ld_alpha=0.0, loss_type=["ipo"]),
    "use_weighting": dict(use_weighting=True),
    "precompute_ref_log_probs": dict(precompute_ref_log_probs=True, precompute_ref_batch_size=3),
    "max_length": dict(max_length=24),  # drops the row whose prompt fills it, in both
    "pad_to_multiple_of": dict(pad_to_multiple_of=16),
    "padding_free": dict(padding_free=True),  # DPOTrainer 1.16 falls back to padding; DMPO packs: same numbers
    "disable_dropout": dict(disable_dropout=False),
    "sync_ref_model": dict(sync_ref_model=True, ref_model_sync_steps=1, ref_model_mixup_alpha=0.5),
    "dataset_num_proc": dict(dataset_num_proc=2),
    "pad_token": dict(pad_token="<|end_header_id|>"),
    "gradient_accumulation_steps": dict(gradient_accumulation_steps=2, per_device_train_batch_size=2),
    "gradient_checkpointing": dict(gradient_checkpointing=True),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_option_trains_to_dpos_numbers_with_one_action(tmp_path, model_dir, name):
    data = rows("standard")
    if name == "max_length":  # the other rows fit entirely (at most 21 tokens)
        data[2]["prompt"] = "Task: a very long task that fills the whole budget of tokens and more."
    options, tol = OPTIONS[name], 1e-6
    if name == "f_alpha_divergence_coef":  # DPOTrainer 1.16's alpha-divergence fails on float64 (a KeyError)
        options, tol = {**options, "model_init_kwargs": {"dtype": torch.float32}}, 1e-5
    dpo, dmpo = run_both(tmp_path, model_dir, data=data, **options)
    assert len(dpo.train_dataset) == len(dmpo.train_dataset)
    if name == "max_length":
        assert len(dmpo.train_dataset) == 7
    assert_same_numbers(dpo, dmpo, tol)


@pytest.mark.skipif(torch.cuda.is_available(), reason="activation offloading runs on CUDA; this is its CPU behaviour")
def test_activation_offloading_fails_on_cpu_exactly_as_in_dpotrainer(tmp_path, model_dir):
    """TRL 1.16's activation offloading needs a CUDA device; on CPU both trainers stop in DPOTrainer.__init__ alike."""
    errors = []
    for config_cls, trainer_cls in ((DPOConfig, DPOTrainer), (DMPOConfig, DMPOTrainer)):
        args = config_cls(**base_kwargs(tmp_path / trainer_cls.__name__, activation_offloading=True))
        with pytest.raises(Exception) as err:  # noqa: PT011  (whatever DPOTrainer raises, DMPOTrainer must too)
            trainer_cls(model=model_dir, args=args, train_dataset=Dataset.from_list(rows("standard")))
        errors.append((type(err.value), str(err.value)))
    assert errors[0] == errors[1]


def test_wpo_with_sft_trains(tmp_path, model_dir):
    """WPO with the sft term trains (DPOTrainer 1.16 scales the expanded sft tensor in place there and fails; DMPO
    scales a copy, so this holds whatever DPOTrainer does)."""
    options = dict(use_weighting=True, loss_type=["sigmoid", "sft"])
    tok = make_tokenizer("llama3_1")
    args = DMPOConfig(**base_kwargs(tmp_path / "dmpo", **options))
    trainer = DMPOTrainer(
        model=model_dir, args=args, train_dataset=Dataset.from_list(rows("standard")), processing_class=tok
    )
    trainer.train()
    assert trainer.state.global_step == 2


def test_multi_turn_trains_with_every_loss_type_and_option(tmp_path, model_dir):
    """Every option that has a multi-turn meaning trains on multi-turn data (the values: tests/core/test_losses.py)."""
    tok = make_tokenizer("llama3_1")
    data = Dataset.from_list(rows("multi_turn"))
    for name, options in sorted(OPTIONS.items()):
        if name == "max_length":
            options = {"max_length": 100}  # cuts trailing actions of the longer trajectories
        args = DMPOConfig(**base_kwargs(tmp_path / name.replace("=", "_"), max_steps=1, **options))
        trainer = DMPOTrainer(model=model_dir, args=args, train_dataset=data, processing_class=tok)
        trainer.train()
        assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"])), name


def test_chatml_end_of_turn_rule_pins_both_tokenizations(tmp_path):
    """ChatML renders ``<|im_end|>\\n``: DPOTrainer's completion is DMPO's action plus the ``\\n`` the template adds."""
    tok = make_tokenizer("qwen2_5")
    dataset = Dataset.from_list(rows("conversational"))
    path = tmp_path / "m"
    save_tiny_model(path, tok)
    kw = base_kwargs(tmp_path, max_steps=1)
    dpo = DPOTrainer(model=str(path), args=DPOConfig(**kw), train_dataset=dataset, processing_class=tok)
    dmpo = DMPOTrainer(model=str(path), args=DMPOConfig(**kw), train_dataset=dataset, processing_class=tok)
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    for i in range(len(dataset)):
        d, m = dpo.train_dataset[i], dmpo.train_dataset[i]
        assert d["prompt_ids"] == m["prompt_ids"]
        for side in ("chosen", "rejected"):
            action = [x for x, t in zip(m[f"{side}_ids"], m[f"{side}_turn_ids"], strict=True) if t >= 0]
            assert action == m[f"{side}_ids"][: len(action)] and action[-1] == tok.convert_tokens_to_ids("<|im_end|>")
            assert d[f"{side}_ids"] == action + newline  # DPOTrainer also trains on the markup after <|im_end|>
            assert m[f"{side}_ids"] == action + newline  # DMPO keeps it in the sequence, as context
            assert m[f"{side}_turn_ids"][-len(newline) :] == [-1] * len(newline)


# A non-default value for every field DPOConfig adds to TrainingArguments, and DMPO's answer: None = accepted.
FIELD_VALUES = {
    "model_init_kwargs": ({"dtype": "float32"}, None),
    "trust_remote_code": (True, None),
    "router_aux_loss_coef": (0.01, None),
    "disable_dropout": (False, None),
    "dataset_num_proc": (2, None),
    "max_length": (64, None),
    "truncation_mode": ("keep_end", KEEP_END_REASON),
    "padding_free": (True, None),
    "pad_to_multiple_of": (8, None),
    "precompute_ref_log_probs": (True, None),
    "precompute_ref_batch_size": (16, None),
    "loss_type": (["hinge"], None),
    "loss_weights": ([0.5], None),
    "ld_alpha": (0.5, None),
    "f_divergence_type": ("js_divergence", None),
    "f_alpha_divergence_coef": (0.7, None),
    "label_smoothing": (0.1, None),
    "beta": (0.3, None),
    "use_weighting": (True, None),
    "discopop_tau": (0.1, None),
    "activation_offloading": (True, None),
    "sync_ref_model": (True, None),
    "ref_model_mixup_alpha": (0.9, None),
    "ref_model_sync_steps": (8, None),
    "pad_token": ("<pad>", None),
}


def test_every_dpoconfig_field_is_accepted_unless_the_error_says_why(tmp_path):
    own = {f.name for f in dataclasses.fields(TrainingArguments)}
    dpo_fields = [f.name for f in dataclasses.fields(DPOConfig) if f.name not in own]
    assert sorted(dpo_fields) == sorted(FIELD_VALUES)  # a new DPOConfig field must be added here
    for name in dpo_fields:
        value, refusal = FIELD_VALUES[name]
        kw = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, **{name: value})
        DPOConfig(**kw)  # the value is valid for DPO
        if refusal is None:
            assert getattr(DMPOConfig(**kw), name) == getattr(DPOConfig(**kw), name), name
        else:
            with pytest.raises(ValueError) as err:
                DMPOConfig(**kw)
            assert str(err.value) == refusal


def test_model_tags_add_dmpo_to_dpos(tmp_path, model_dir):
    tok = make_tokenizer("llama3_1")
    trainer = DMPOTrainer(
        model=model_dir,
        args=DMPOConfig(**base_kwargs(tmp_path)),
        train_dataset=Dataset.from_list(rows("standard")),
        processing_class=tok,
    )
    assert trainer.model.model_tags == ["trl", "dpo", "dmpo"]
