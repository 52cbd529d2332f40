"""EnvEvalCallback: evaluates in the environment during DMPOTrainer training and logs through the trainer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dmpo_trl.envs.callback import EnvEvalCallback
from dmpo_trl.envs.io import to_dataset
from dmpo_trl.envs.pairs import build_pairs
from dmpo_trl.testing import make_tokenizer, tiny_model
from tests.envs.toy_env import KeyDoorEnv


KEYS = {"env/success_rate", "env/mean_score", "env/mean_steps", "env/invalid_action_rate", "env/episodes"}


def test_callback_logs_through_dmpo_trainer(tmp_path):
    from dmpo_trl import DMPOConfig, DMPOTrainer

    env = KeyDoorEnv()
    tok = make_tokenizer("qwen2_5")
    rows = build_pairs(env, [0, 1, 2, 3], seed=0, progress=False)
    callback = EnvEvalCallback(
        lambda: env, [100, 101], max_steps=2, max_new_tokens=4, every_n_steps=2, on_train_begin=True, progress=False
    )
    args = DMPOConfig(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        activation_checkpointing=False,
        disable_tqdm=True,
    )
    trainer = DMPOTrainer(
        model=tiny_model(tok), args=args, train_dataset=to_dataset(rows), processing_class=tok, callbacks=[callback]
    )
    callback.attach(trainer)
    assert trainer.callback_handler.callbacks.count(callback) == 1  # attach does not register twice
    trainer.train()
    assert [step for step, _ in callback.history] == [0, 2, 4]
    logged = [e for e in trainer.state.log_history if "env/success_rate" in e]
    assert [e["step"] for e in logged] == [0, 2, 4]
    assert KEYS <= set(logged[-1]) and logged[-1]["env/episodes"] == 2.0
    assert logged[-1]["env/mean_steps"] == callback.history[-1][1].mean_steps
    # the env figures do not swallow the trainer's own metrics: every training step keeps its loss and margin
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in train_logs] == [1, 2, 3, 4]
    assert all("rewards/margins" in e and "env/success_rate" not in e for e in train_logs)
    assert not any("rewards/margins" in e for e in logged)


def test_unbound_callback_appends_to_log_history():
    env = KeyDoorEnv()
    tok = make_tokenizer("qwen2_5")
    callback = EnvEvalCallback(env, [100], max_steps=1, max_new_tokens=3, progress=False)
    state = SimpleNamespace(global_step=7, epoch=0.5, log_history=[])
    callback.on_evaluate(None, state, None, model=tiny_model(tok), processing_class=tok)
    callback.on_evaluate(None, state, None, model=tiny_model(tok), processing_class=tok)  # same step: once
    assert len(state.log_history) == 1
    entry = state.log_history[0]
    assert KEYS <= set(entry) and entry["step"] == 7 and entry["env/invalid_action_rate"] == 1.0


def test_callback_argument_errors():
    with pytest.raises(ValueError, match="at least one episode"):
        EnvEvalCallback(KeyDoorEnv(), [])
    with pytest.raises(ValueError, match="every_n_steps"):
        EnvEvalCallback(KeyDoorEnv(), [1], every_n_steps=0)
    callback = EnvEvalCallback(KeyDoorEnv(), [1], progress=False)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        callback.evaluate(model=None, tokenizer=None, state=SimpleNamespace(global_step=0))
