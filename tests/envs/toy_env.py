"""A tiny pure-Python environment implementing `AgentEnv` (no Java): fetch a key, open a door, take the coin."""

from __future__ import annotations

from dmpo_trl.envs import AgentEnv, EnvReset, EnvStep


COLORS = ["red", "blue", "green", "yellow", "white", "black"]


class KeyDoorEnv(AgentEnv):
    """Two rooms; the coin is behind a locked door whose key colour depends on the variation."""

    env_name = "key-door"
    action_hint = "Actions look like: take <object>, open door, move north, look around."

    def __init__(self):
        super().__init__(task="coin-behind-door")

    def _reset(self, variation: int) -> EnvReset:
        self.key = COLORS[variation % len(COLORS)]
        self.decoy = COLORS[(variation + 1) % len(COLORS)]
        self.have_key = self.door_open = self.north = self.have_coin = False
        return EnvReset(self._look(), f"Take the coin. It is behind the door; the {self.key} key opens it.")

    def _look(self) -> str:
        if self.north:
            return "You are in the vault." + ("" if self.have_coin else " There is a coin.")
        keys = [] if self.have_key else [f"a {self.key} key"]
        door = "open" if self.door_open else "closed"
        return f"You are in the hall. You see {', '.join(keys + [f'a {self.decoy} key'])}. The door is {door}."

    def valid_actions(self) -> list[str]:
        if self.north:
            return ["look around", "move south"] + ([] if self.have_coin else ["take coin"])
        acts = ["look around", f"take {self.decoy} key"]
        if not self.have_key:
            acts.append(f"take {self.key} key")
        if self.have_key and not self.door_open:
            acts.append("open door")
        if self.door_open:
            acts.append("move north")
        return sorted(acts)

    def _step(self, action: str) -> EnvStep:
        if action not in self.valid_actions():
            return EnvStep("I don't understand that.", self.score, False, False, valid=False)
        if action == f"take {self.key} key":
            self.have_key = True
            obs = f"You take the {self.key} key."
        elif action == f"take {self.decoy} key":
            return EnvStep("The key crumbles to dust. You lose.", self.score, True, False)
        elif action == "open door":
            self.door_open = True
            obs = "The door opens."
        elif action in ("move north", "move south"):
            self.north = action == "move north"
            obs = self._look()
        elif action == "take coin":
            self.have_coin = True
            obs = "You take the coin."
        else:
            obs = self._look()
        score = (self.have_key + self.door_open + self.have_coin) / 3
        return EnvStep(obs, score, self.have_coin, self.have_coin)

    def gold_actions(self) -> list[str]:
        return [f"take {self.key} key", "open door", "move north", "take coin"]

    def variations(self, split: str) -> list[int]:
        return {"train": list(range(50)), "dev": list(range(50, 60)), "test": list(range(100, 120))}[split]
