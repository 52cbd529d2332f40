"""A small TRL-style `environment_factory` environment for the adapter tests: tools are public methods with
Google-style docstrings, `reset(**row)` returns the first observation, `get_reward()` scores the episode."""

from __future__ import annotations


class VaultEnv:
    """Three rooms; the coin lies in the room the row names. Take it to win."""

    def reset(self, **row) -> str:
        self.room = "hall"
        self.target = row["target"]
        self.have_coin = False
        return " You are in the hall. Doors lead north and east."

    def move(self, direction: str) -> str:
        """Walk through a door.

        Args:
            direction: "north", "east" or "back" (to the hall).
        """
        if direction not in ("north", "east", "back"):
            raise ValueError(f"there is no door to the {direction}")
        self.room = "hall" if direction == "back" else direction
        coin = " There is a coin." if self.room == self.target and not self.have_coin else ""
        return f"You are in the {self.room} room.{coin}"

    def take(self, item: str) -> str:
        """Pick something up.

        Args:
            item: the thing to take.
        """
        if item != "coin" or self.room != self.target or self.have_coin:
            raise ValueError(f"there is no {item} here")
        self.have_coin = True
        return "You take the coin."

    def get_reward(self) -> float:
        return 1.0 if self.have_coin else 0.0


def vault_rows(n: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        target = ("north", "east")[i % 2]
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": "You explore a vault with tools."},
                    {"role": "user", "content": "Find the coin and take it."},
                ],
                "target": target,
                "gold_actions": [
                    {"name": "move", "arguments": {"direction": target}},
                    {"name": "take", "arguments": {"item": "coin"}},
                ],
                "split": "train" if i < n - 4 else "test",
            }
        )
    return rows
