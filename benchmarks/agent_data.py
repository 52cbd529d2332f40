"""Synthetic multi-turn preference pairs whose lengths look like agent trajectories (for benchmarks).

Distribution (per pair, drawn with a seeded RNG):
- prompt: a system message and a task of 20-60 words;
- chosen: 3-12 actions, rejected: 3-40 actions (failures run longer, as in ETO's ScienceWorld/ALFWorld data);
- each action: "Thought: ... Action: ..." of 5-25 words; each observation: 20-200 words ("Observation: ...").
The words come from a fixed vocabulary, so token counts follow word counts.
"""

from __future__ import annotations

import math
import random


WORDS = (
    "look around open door north south east west take coin key box table kitchen room fridge counter drawer "
    "move go to the a you see there is nothing special here score task done inventory examine put in on"
).split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _side(rng, n_actions, obs_words=(20, 200)):
    msgs = []
    for t in range(n_actions):
        msgs.append({"role": "assistant", "content": f"Thought: {_text(rng, 3, 15)}\nAction: {_text(rng, 2, 10)}"})
        if t < n_actions - 1:
            msgs.append({"role": "user", "content": f"Observation: {_text(rng, *obs_words)}"})
    return msgs


def scaled_pairs(n: int, seed: int = 0, scale: float = 1.0, obs_words=(8, 80)) -> list[dict]:
    """`agent_pairs` with ``scale`` times the actions per side (chosen 3-12, rejected 3-40 at scale 1), so that
    longer trajectories come from more turns and the share of action tokens stays the same."""
    return agent_pairs(
        n,
        seed=seed,
        chosen=(math.ceil(3 * scale), math.ceil(12 * scale)),
        rejected=(math.ceil(3 * scale), math.ceil(40 * scale)),
        obs_words=obs_words,
    )


def agent_pairs(n: int, seed: int = 0, chosen=(3, 12), rejected=(3, 40), obs_words=(20, 200)) -> list[dict]:
    """`n` preference rows in the project's format with the length distribution above (`obs_words`: words per
    observation, uniform in the closed range)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = [
            {"role": "system", "content": "You are an agent in a text game. Answer with a thought and an action."},
            {"role": "user", "content": f"Task: {_text(rng, 20, 60)}"},
        ]
        rows.append(
            {
                "prompt": prompt,
                "chosen": _side(rng, rng.randint(*chosen), obs_words),
                "rejected": _side(rng, rng.randint(*rejected), obs_words),
            }
        )
    return rows
