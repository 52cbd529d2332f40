"""`EnvEvalCallback`: evaluate the agent in its environment while it trains, and log the figures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from transformers import Trainer, TrainerCallback

from .base import AgentEnv
from .evaluate import EvalResult, evaluate_model


__all__ = ["EnvEvalCallback"]

logger = logging.getLogger(__name__)


class EnvEvalCallback(TrainerCallback):
    """Roll the model out on held-out episodes during training and log success rate, score, steps, invalid actions.

    It runs when the trainer evaluates (``on_evaluate``, i.e. with ``eval_strategy`` set), every `every_n_steps`
    optimizer steps if given, and optionally at the start and end of training. The figures are logged through the
    trainer's `log` (so they reach every reporter and ``trainer.state.log_history``) under
    ``"<prefix>/success_rate"`` etc. when the callback is bound to the trainer with `attach`; unbound, they are
    appended to ``state.log_history`` and the Python log. Every result is also kept in `history`.

    Args:
        env: the environment, or a zero-argument factory building it on first use.
        variations: episode ids to evaluate on (held-out ones).
        tokenizer: tokenizer with a chat template; defaults to the trainer's processing class.
        max_steps: action budget per episode.
        max_new_tokens: reply length limit.
        every_n_steps: also evaluate every this many optimizer steps.
        on_train_begin / on_train_end: also evaluate before the first and after the last step.
        prefix: metric name prefix.
        progress: show a progress bar per evaluation.

    Example::

        callback = EnvEvalCallback(env, variations=splits.heldout_variations, every_n_steps=20)
        trainer = DMPOTrainer(model, args=args, train_dataset=ds, processing_class=tok, callbacks=[callback])
        callback.attach(trainer)
    """

    def __init__(
        self,
        env: AgentEnv | Callable[[], AgentEnv],
        variations: Sequence[int],
        *,
        tokenizer: Any = None,
        max_steps: int = 10,
        max_new_tokens: int = 24,
        every_n_steps: int | None = None,
        on_train_begin: bool = False,
        on_train_end: bool = False,
        prefix: str = "env",
        progress: bool = True,
    ):
        if not variations:
            raise ValueError("EnvEvalCallback needs at least one episode (variation) to evaluate on")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self._env = env if isinstance(env, AgentEnv) else None
        self._env_factory = None if isinstance(env, AgentEnv) else env
        self.variations = list(variations)
        self.tokenizer = tokenizer
        self.max_steps, self.max_new_tokens = max_steps, max_new_tokens
        self.every_n_steps = every_n_steps
        self.eval_on_train_begin, self.eval_on_train_end = on_train_begin, on_train_end
        self.prefix = prefix
        self.progress = progress
        self.trainer: Any = None
        self.history: list[tuple[int, EvalResult]] = []
        self._last_step: int | None = None

    def attach(self, trainer: Any) -> EnvEvalCallback:
        """Bind to `trainer` (so the figures go through `trainer.log`) and register if not yet registered."""
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return self

    @property
    def env(self) -> AgentEnv:
        if self._env is None:
            self._env = self._env_factory()
        return self._env

    def evaluate(self, model: Any, tokenizer: Any, state: Any) -> dict[str, float]:
        """Run the evaluation now and log it; returns the logged figures."""
        tokenizer = self.tokenizer or tokenizer
        if tokenizer is None:
            raise ValueError(
                "EnvEvalCallback needs a tokenizer: pass tokenizer= or give the trainer a processing_class"
            )
        result = evaluate_model(
            model,
            tokenizer,
            self.env,
            self.variations,
            max_steps=self.max_steps,
            max_new_tokens=self.max_new_tokens,
            progress=self.progress,
            desc=f"env eval @ step {state.global_step}",
        )
        self.history.append((state.global_step, result))
        self._last_step = state.global_step
        metrics = result.metrics(prefix=f"{self.prefix}/")
        if self.trainer is not None:
            # transformers' Trainer.log, not the trainer's own: TRL trainers' log() flushes their accumulated
            # training metrics into whatever is logged, which would take them away from the next training log entry.
            log = Trainer.log if isinstance(self.trainer, Trainer) else type(self.trainer).log
            log(self.trainer, metrics)
        else:
            state.log_history.append({**metrics, "step": state.global_step, "epoch": state.epoch})
            logger.info("env evaluation at step %d: %s", state.global_step, metrics)
        return metrics

    def _maybe(self, state, control, kwargs):
        if self._last_step == state.global_step:  # already evaluated this step (e.g. on_evaluate + every_n)
            return control
        # Logging resets `control.should_log`; keep the trainer's own decision to log this step.
        should_log = getattr(control, "should_log", None)
        self.evaluate(kwargs["model"], kwargs.get("processing_class"), state)
        if should_log is not None:
            control.should_log = should_log
        return control

    def on_train_begin(self, args, state, control, **kwargs):
        if self.eval_on_train_begin:
            return self._maybe(state, control, kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            return self._maybe(state, control, kwargs)

    def on_evaluate(self, args, state, control, **kwargs):
        return self._maybe(state, control, kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        if self.eval_on_train_end:
            return self._maybe(state, control, kwargs)
