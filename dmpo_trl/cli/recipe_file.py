"""The one reader of training recipes, for `dmpo-trl train` and `dmpo-trl validate --config`: the same file is
accepted or refused by both, with the same message naming the recipe file and the key.

- `read_recipe`: the YAML mapping of a recipe file; a key given twice is an error (YAML readers keep the last one).
- `check_recipe`: every key is a field of the training parser (else the closest known key is suggested), and every
  value has the field's type: text or a boolean for a number (``beta: "abc"``, ``gamma: true``), a scalar for a list field (``data_files: 5``), a
  list nested in a list (``lora_target_modules: [[q_proj]]``) are named here, before argparse or the trainer would
  report them as a flag the user never typed or a `TypeError`.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any

from dmpo_trl.data.io import read_yaml_mapping


__all__ = ["check_recipe", "read_recipe"]

#: Recipe keys the training parser does not define but the launcher reads.
EXTRA_KEYS = {"env"}


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe's mapping (`dmpo_trl.data.io.read_yaml_mapping`: a key given twice is an error naming the file)."""
    return read_yaml_mapping(path, "recipe")


def _kind(kind: Any) -> str:
    names = {float: "a number", int: "a whole number", str: "text"}
    if kind in names:
        return names[kind]
    if getattr(kind, "__name__", "") == "string_to_bool":
        return "true or false"
    return getattr(kind, "__name__", str(kind))


def check_recipe(parser: argparse.ArgumentParser, recipe: dict[str, Any], path: str | Path) -> None:
    """Refuse unknown keys and values of the wrong type, naming the recipe file and the key."""
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}  # argparse's list of the options it defines
    unknown = [key for key in recipe if key not in actions and key not in EXTRA_KEYS]
    if unknown:
        hints = []
        for key in unknown:
            match = difflib.get_close_matches(str(key), sorted(actions), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {match[0]!r}?)" if match else ""))
        raise ValueError(f"{path}: unknown recipe key(s) {', '.join(hints)}")
    for key, value in recipe.items():
        action = actions.get(key)
        if action is None or value is None:
            continue
        many = action.nargs in ("+", "*")
        values = value if many and isinstance(value, list) else [value]
        for item in values:
            where = f"{path}: recipe key {key!r}"
            if many and isinstance(item, (list, dict)) and action.type in (str, int, float):
                raise ValueError(f"{where}: expects a list of values, got a nested {type(item).__name__}: {value!r}")
            if many and action.type is str and not isinstance(item, str):
                raise ValueError(f"{where}: expects text (or a list of it), got {item!r}")
            if isinstance(item, bool) and action.type in (int, float):  # YAML's true is no number (gamma: true)
                raise ValueError(f"{where}: expects {_kind(action.type)}, got {item!r}")
            scalar = action.type in (int, float) or getattr(action.type, "__name__", "") == "string_to_bool"
            if isinstance(item, str) and scalar:
                try:
                    action.type(item)
                except (ValueError, TypeError, argparse.ArgumentTypeError):
                    raise ValueError(f"{where}: expects {_kind(action.type)}, got {item!r}") from None
