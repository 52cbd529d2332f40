"""Batched rollouts of a chat LM in an environment: the explore stage's sampler and a fast greedy evaluation.

All episodes of a batch generate their next action in one `generate` call, and the batch keeps its key/value cache
from one step to the next, so each step feeds the model only the new tokens of every conversation (the end of the
reply, the observation, the next assistant header). What the model sees is exactly the re-rendered conversation,
``apply_chat_template(messages, add_generation_prompt=True)`` tokenized as the trainer tokenizes it: generated tokens
the rendering does not keep (text after the parsed action, a reply cut at `max_new_tokens`) are masked out of the
cache and the rendered tokens appended instead; positions come from the attention mask, so masked tokens leave no
gap. Where a template breaks the prefix property, the batch is re-encoded from scratch at that step (exact, slower).
Episodes leave the batch (and the cache) when they end.

One environment instance serves the whole batch: before an episode is stepped, the environment is reset to its
variation and the episode's earlier actions are replayed (a TextWorld-Express step takes ~0.2 ms; the environment
must be deterministic, as the pair builder already requires). Every recorded observation is the environment's reply
after a replay from reset.

Sampling (``temperature > 0``) draws from the model's distribution at that temperature (no top-k; optional
``top_p``); ``temperature = 0`` is greedy. The torch RNG is seeded per batch from `seed` inside `fork_rng`, so the
caller's RNG is untouched and the same arguments give the same rollouts on the same machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from dmpo_trl.core.rows.plain_text import common_prefix_length

from .base import AgentEnv, EnvStep
from .evaluate import EpisodeResult, EvalResult
from .trajectory import Trajectory


__all__ = ["Rollout", "generate_rollouts", "rollouts_to_eval"]


def _cache_kwarg() -> str:
    try:  # transformers renamed generate's `past_key_values` to `cache` (the old name warns)
        from transformers.generation.utils import ALL_CACHE_NAMES
    except ImportError:
        return "past_key_values"
    return "cache" if "cache" in ALL_CACHE_NAMES else "past_key_values"


_CACHE_KWARG = _cache_kwarg()


@dataclass
class Rollout(Trajectory):
    """A trajectory the model produced: actions, the environment's replies, and the model's raw replies."""

    variation: int = 0
    sample: int = 0
    """Index of this rollout among the rollouts of its variation."""
    replies: list[str] = field(default_factory=list)
    truncated: bool = False
    """Stopped by `max_steps` before the environment said the episode was over."""


class _Cursor:
    """Brings the one environment to an episode's state by reset + replay, unless it is already there."""

    def __init__(self, env: AgentEnv):
        self.env = env
        self.key: tuple | None = None

    def step(self, variation: int, previous: Sequence[str], action: str) -> EnvStep:
        if self.key != (variation, tuple(previous)):
            self.env.reset(variation)
            for past in previous:
                self.env.step(past)
        step = self.env.step(action)
        self.key = (variation, (*previous, action))
        return step


def _render_ids(tokenizer, messages, tools) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _left_pad(rows: list[list[int]], pad: int):
    import torch

    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def _eos_ids(model, tokenizer) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class _Episode:
    def __init__(self, env: AgentEnv, variation: int, sample: int, tokenizer, tools):
        start = env.reset(variation)
        self.rollout = Rollout(start=start, variation=int(variation), sample=sample)
        self.messages = env.prompt_messages(start)
        self.seen = _render_ids(tokenizer, self.messages, tools)  # token ids in the cache (unmasked), rendered


def generate_rollouts(
    model: Any,
    tokenizer: Any,
    env: AgentEnv,
    variations: Sequence[int],
    *,
    num_rollouts: int = 1,
    max_steps: int = 10,
    max_new_tokens: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    desc: str | None = None,
    autocast_dtype: Any = None,
) -> list[Rollout]:
    """Roll `model` out `num_rollouts` times on each variation (see the module docstring).

    Returns the rollouts in order: all samples of the first variation, then of the second, ... Each episode ends
    when the environment says done or after `max_steps` actions (``truncated=True``). `autocast_dtype` (e.g.
    ``torch.bfloat16``) runs the model under `torch.autocast` on its device.
    """

    import torch

    if num_rollouts < 1 or max_steps < 1 or batch_size < 1:
        raise ValueError("num_rollouts, max_steps and batch_size must be >= 1")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template; rollouts render the conversation with it")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    jobs = [(int(v), k) for v in variations for k in range(num_rollouts)]
    results: list[Rollout] = []
    was_training = bool(getattr(model, "training", False))
    model.eval()
    bar = tqdm(total=len(jobs), desc=desc or f"rollouts {env.describe()}", disable=not progress)
    try:
        for b, first in enumerate(range(0, len(jobs), batch_size)):
            device_type = next(model.parameters()).device.type
            autocast = (
                torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            )
            with torch.random.fork_rng(devices=[]), autocast:
                torch.manual_seed(seed * 100003 + b)
                done = _run_batch(
                    model,
                    tokenizer,
                    env,
                    jobs[first : first + batch_size],
                    max_steps,
                    max_new_tokens,
                    temperature,
                    top_p,
                    bar,
                )
            results.extend(done)
            solved = sum(r.success for r in results)
            bar.set_postfix(success=f"{solved / len(results):.2f}")
    finally:
        bar.close()
        if was_training:
            model.train()
    return results


def _run_batch(model, tokenizer, env, jobs, max_steps, max_new_tokens, temperature, top_p, bar) -> list[Rollout]:
    import torch

    tools = env.tool_schemas()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    cursor = _Cursor(env)
    episodes = [_Episode(env, v, k, tokenizer, tools) for v, k in jobs]
    live = list(range(len(episodes)))  # row i of the batch is episodes[live[i]]
    device = next(model.parameters()).device
    ids, mask = _left_pad([e.seen for e in episodes], pad)
    cache = None
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": top_p} if temperature > 0 else {}
    for _ in range(max_steps):
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                **({_CACHE_KWARG: cache} if cache is not None else {}),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=sorted(eos),
                return_dict_in_generate=True,
                **({"do_sample": False} if not sampling else sampling),
            )
        sequences = out.sequences.cpu()
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        new = sequences[:, ids.shape[1] :]
        gen_mask = torch.zeros_like(new)
        chunks: list[list[int]] = []
        keep: list[int] = []
        reencode = False
        for row, index in enumerate(live):
            episode = episodes[index]
            generated = new[row].tolist()
            end = next((j + 1 for j, tok in enumerate(generated) if tok in eos), len(generated))
            generated = generated[:end]
            reply = tokenizer.decode(generated, skip_special_tokens=True)
            rollout = episode.rollout
            action = env.parse_reply(reply)
            step = cursor.step(rollout.variation, rollout.actions, action)
            rollout.add(action, step)
            rollout.replies.append(reply)
            if step.done or rollout.num_turns >= max_steps:
                rollout.truncated = not step.done
                bar.update(1)
                chunks.append([])
                continue
            episode.messages = episode.messages + env.turn_messages(action, step)
            target = _render_ids(tokenizer, episode.messages, tools)
            common = common_prefix_length(episode.seen + generated, target)
            if common < len(episode.seen):
                reencode = True  # the template re-rendered earlier turns differently
            kept = max(0, common - len(episode.seen))
            gen_mask[row, :kept] = 1
            chunks.append(target[len(episode.seen) + kept :])
            episode.seen = target
            keep.append(row)
        if not keep:
            break
        if reencode or cache is None:
            ids, mask = _left_pad([episodes[live[r]].seen for r in keep], pad)
            cache = None
        else:
            chunk_ids, chunk_mask = _left_pad(chunks, pad)
            ids = torch.cat([sequences, chunk_ids], dim=1)[keep]
            mask = torch.cat([mask, gen_mask, chunk_mask], dim=1)[keep]
            if len(keep) < len(live):
                cache.batch_select_indices(torch.tensor(keep, device=device))
        live = [live[r] for r in keep]
    return [e.rollout for e in episodes]


def rollouts_to_eval(rollouts: Sequence[Rollout]) -> EvalResult:
    """The `EvalResult` (success rate, mean score, steps, invalid actions) of greedy rollouts, one per variation."""
    return EvalResult(
        [
            EpisodeResult(
                variation=r.variation,
                success=r.success,
                score=float(r.final_score),
                steps=r.num_turns,
                invalid_actions=r.num_invalid,
                actions=list(r.actions),
            )
            for r in rollouts
        ]
    )
