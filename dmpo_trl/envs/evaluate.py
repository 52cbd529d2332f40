"""Roll an agent out in an environment for held-out episodes and measure how well it does.

A *policy* is any callable that maps the conversation so far (prompt, then assistant actions and user
observations, see `dmpo_trl.envs.prompting`) to the assistant's reply; `parse_action` turns the reply into the
action that is stepped. `HFPolicy` wraps a causal LM with a chat template (greedy `generate` by default);
`GoldPolicy` replays the environment's gold actions (an oracle, for sanity checks). A policy may define
``start_episode(env)``, called after each reset.

Figures (`EvalResult.metrics()`): ``success_rate`` (fraction of episodes solved), ``mean_score`` (final score in
``[0, 1]``), ``mean_steps`` (actions per episode), ``invalid_action_rate`` (fraction of all actions the environment
did not understand, including replies with no parseable action).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from tqdm.auto import tqdm

from .base import AgentEnv
from .prompting import build_prompt


__all__ = [
    "EpisodeResult",
    "EvalResult",
    "GoldPolicy",
    "HFPolicy",
    "Policy",
    "evaluate_model",
    "evaluate_policy",
    "run_episode",
]


class Policy(Protocol):
    """Maps the messages so far to the assistant's next reply (text)."""

    def __call__(self, messages: list[dict[str, Any]]) -> str: ...


@dataclass
class EpisodeResult:
    """One evaluated episode."""

    variation: int
    success: bool
    score: float
    steps: int
    invalid_actions: int
    actions: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    """Episodes of one evaluation and their summary figures."""

    episodes: list[EpisodeResult]

    @property
    def success_rate(self) -> float:
        return sum(e.success for e in self.episodes) / max(len(self.episodes), 1)

    @property
    def mean_score(self) -> float:
        return sum(e.score for e in self.episodes) / max(len(self.episodes), 1)

    @property
    def mean_steps(self) -> float:
        return sum(e.steps for e in self.episodes) / max(len(self.episodes), 1)

    @property
    def invalid_action_rate(self) -> float:
        return sum(e.invalid_actions for e in self.episodes) / max(sum(e.steps for e in self.episodes), 1)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """The four figures (and the episode count) as a flat dict, keys prefixed with `prefix`."""
        return {
            f"{prefix}success_rate": self.success_rate,
            f"{prefix}mean_score": self.mean_score,
            f"{prefix}mean_steps": self.mean_steps,
            f"{prefix}invalid_action_rate": self.invalid_action_rate,
            f"{prefix}episodes": float(len(self.episodes)),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics(), "episodes": [asdict(e) for e in self.episodes]}


def run_episode(env: AgentEnv, policy: Policy, variation: int, max_steps: int) -> EpisodeResult:
    """Play one episode: at most `max_steps` actions, stopping when the environment says it is done."""
    start = env.reset(variation)
    if hasattr(policy, "start_episode"):
        policy.start_episode(env)
    messages = build_prompt(env, start)
    actions: list[str] = []
    invalid = 0
    for _ in range(max_steps):
        action = env.parse_reply(policy(messages))
        step = env.step(action)
        actions.append(action)
        invalid += not step.valid
        messages += env.turn_messages(action, step)
        if step.done:
            break
    return EpisodeResult(
        variation=int(variation),
        success=env.success,
        score=float(env.score),
        steps=len(actions),
        invalid_actions=invalid,
        actions=actions,
    )


def evaluate_policy(
    env: AgentEnv,
    policy: Policy,
    variations: Sequence[int],
    *,
    max_steps: int = 10,
    progress: bool = True,
    desc: str | None = None,
) -> EvalResult:
    """Evaluate `policy` on the given episodes (use held-out ones) with a progress bar."""
    episodes: list[EpisodeResult] = []
    bar = tqdm(list(variations), desc=desc or f"eval {env.describe()}", disable=not progress)
    for variation in bar:
        episodes.append(run_episode(env, policy, variation, max_steps))
        bar.set_postfix(success=f"{EvalResult(episodes).success_rate:.2f}")
    return EvalResult(episodes)


class GoldPolicy:
    """Replays the environment's gold actions (an upper bound; checks the evaluation loop)."""

    def __init__(self) -> None:
        self._actions: list[str] = []

    def start_episode(self, env: AgentEnv) -> None:
        self._actions = list(env.gold_actions())

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        done = sum(m["role"] == "assistant" for m in messages)
        return self._actions[done] if done < len(self._actions) else "look around"


class HFPolicy:
    """A causal LM with a chat template as a policy (greedy decoding by default).

    Within an episode the conversation only grows, so the policy keeps the key/value cache of the previous call and
    feeds the model only the tokens after the longest common prefix (the cache is cropped where the re-rendered
    conversation differs, e.g. where the parsed action differs from the raw reply). Greedy outputs are the same as
    without the cache; each episode costs about one forward pass over its final length instead of one per step.

    Args:
        model: a `transformers` causal LM (a PEFT-wrapped one works too).
        tokenizer: its tokenizer, with a chat template.
        max_new_tokens: length limit of one reply (actions are short).
        do_sample: sample instead of greedy decoding.
        reuse_cache: keep the key/value cache between the steps of an episode.
        **generate_kwargs: passed to `model.generate`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 24,
        do_sample: bool = False,
        reuse_cache: bool = True,
        **generate_kwargs: Any,
    ):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; HFPolicy needs one to render the conversation")
        self.model, self.tokenizer = model, tokenizer
        self.reuse_cache = reuse_cache
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.generate_kwargs = {
            "max_new_tokens": max_new_tokens,
            "do_sample": do_sample,
            "pad_token_id": pad,
            **generate_kwargs,
        }
        self._cache: Any = None
        self._cached_ids: list[int] = []
        self.tools: list[dict[str, Any]] | None = None

    def start_episode(self, env: AgentEnv) -> None:
        """Forget the previous episode's cache; take the environment's tool schemas (if any) for the template."""
        self._cache, self._cached_ids = None, []
        self.tools = env.tool_schemas()

    def _prefix_cache(self, ids: list[int]) -> Any:
        if not self.reuse_cache or self._cache is None:
            return None
        keep = 0
        for a, b in zip(ids, self._cached_ids, strict=False):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)  # the model must see at least one new token
        if keep <= 0:
            return None
        extra = self._cache.get_seq_length() - keep
        if extra > 0:
            self._cache.crop(-extra)  # a negative count removes that many tokens (all transformers versions)
        return self._cache

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        import torch

        enc = self.tokenizer.apply_chat_template(
            messages, tools=self.tools, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        device = next(self.model.parameters()).device
        input_ids = enc["input_ids"].to(device)
        cache = self._prefix_cache(input_ids[0].tolist())
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                past_key_values=cache,
                return_dict_in_generate=True,
                **self.generate_kwargs,
            )
        sequence = out.sequences[0]
        if self.reuse_cache and out.past_key_values is not None:
            self._cache = out.past_key_values
            self._cached_ids = sequence[: self._cache.get_seq_length()].tolist()
        return self.tokenizer.decode(sequence[input_ids.shape[1] :], skip_special_tokens=True)


def evaluate_model(
    model: Any,
    tokenizer: Any,
    env: AgentEnv,
    variations: Sequence[int],
    *,
    max_steps: int = 10,
    max_new_tokens: int = 24,
    progress: bool = True,
    desc: str | None = None,
    policy_factory: Callable[..., Policy] = HFPolicy,
    autocast_dtype: Any = None,
) -> EvalResult:
    """Evaluate a causal LM (put in eval mode for the rollouts, then back to its previous mode).

    `autocast_dtype` (e.g. ``torch.bfloat16``) runs the rollouts under `torch.autocast` on the model's device.
    """

    import torch

    was_training = bool(getattr(model, "training", False))
    model.eval()
    device_type = next(model.parameters()).device.type
    autocast = (
        torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    try:
        policy = policy_factory(model, tokenizer, max_new_tokens=max_new_tokens)
        with autocast:
            return evaluate_policy(env, policy, variations, max_steps=max_steps, progress=progress, desc=desc)
    finally:
        if was_training:
            model.train()
