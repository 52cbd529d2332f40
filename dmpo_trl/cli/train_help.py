"""The recipe fields `dmpo-trl train --help` lists, grouped as `trl dpo --help` orders them, DMPO's own fields first.

Order: DMPO's own fields (`DMPOConfig`'s, then `DMPOScriptArguments`'), then what `trl dpo` lists in its own order:
`ScriptArguments`, `DPOConfig` (with `TrainingArguments`), `ModelConfig`, `DatasetMixtureConfig`. Rendering them
imports TRL, transformers and torch (seconds), so the text ships pre-rendered in `train_help.txt`, stamped with the
versions of the packages whose fields it lists and a digest of the source of DMPO's two dataclasses' modules (read
without importing them); where either differs, the help is rendered live instead (slow, never stale).

    python -m dmpo_trl.cli.train_help     # rewrite train_help.txt after a field or a pinned version changes

`tests/cli/test_train_help.py` fails while the shipped text differs from a live rendering.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


HELP_FILE = Path(__file__).with_name("train_help.txt")
WIDTH = 100  # fixed, so the shipped text does not depend on the terminal that rendered it
STAMPED_PACKAGES = ("trl", "transformers", "peft", "accelerate")


def stamp(field_modules: list[str]) -> str:
    """First line of `train_help.txt`: the installed versions of the packages whose fields the help lists, and
    `module@digest` of each module defining DMPO's fields (the digest of its source file, found without importing
    it; `missing` for a module that is gone)."""
    parts = []
    for name in STAMPED_PACKAGES:
        try:
            parts.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name}==?")
    for module in field_modules:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        digest = hashlib.sha256(origin.read_bytes()).hexdigest()[:12] if origin and origin.is_file() else "missing"
        parts.append(f"{module}@{digest}")
    return "# rendered for " + " ".join(parts)


def field_modules() -> list[str]:
    """The modules defining `DMPOConfig` and `DMPOScriptArguments` (imports them)."""
    # lazy: loads torch and TRL; keeps `dmpo-trl --help` fast
    from dmpo_trl import DMPOConfig

    # lazy: loads TRL; keeps `dmpo-trl --help` fast
    from dmpo_trl.cli.script_args import DMPOScriptArguments

    return [DMPOConfig.__module__, DMPOScriptArguments.__module__]


def field_groups(parser: argparse.ArgumentParser) -> list[tuple[str, list[argparse.Action]]]:
    """(title, actions) per group of the recipe parser (`dmpo_trl.cli.script_args.make_parser()`), in display order."""
    from trl import DatasetMixtureConfig, DPOConfig, ModelConfig, ScriptArguments

    # lazy: loads torch and TRL; keeps `dmpo-trl --help` fast
    from dmpo_trl import DMPOConfig

    # lazy: loads TRL; keeps `dmpo-trl --help` fast
    from dmpo_trl.cli.script_args import DMPOScriptArguments

    def own(cls) -> set[str]:  # fields declared in this class's body (new ones and redefined defaults)
        return set(vars(cls).get("__annotations__", {}))

    def every(cls) -> set[str]:
        return set(cls.__dataclass_fields__)

    titles = [
        ("DMPO training (DMPOConfig's own fields)", own(DMPOConfig)),
        ("DMPO data and model card (DMPOScriptArguments' own fields)", own(DMPOScriptArguments)),
        ("script arguments (trl ScriptArguments)", every(ScriptArguments)),
        ("training (trl DPOConfig and transformers TrainingArguments)", every(DPOConfig)),
        ("model (trl ModelConfig)", every(ModelConfig)),
        ("dataset mixtures (trl DatasetMixtureConfig)", every(DatasetMixtureConfig)),
    ]
    groups: dict[str, list[argparse.Action]] = {title: [] for title, _ in titles}
    for action in parser._actions:  # argparse's list of the options it defines, in definition order
        if action.dest == "help":
            continue
        title = next((title for title, names in titles if action.dest in names), None)
        if title is None:
            raise RuntimeError(f"recipe field {action.dest!r} belongs to no help group")
        groups[title].append(action)
    return [(title, groups[title]) for title, _ in titles if groups[title]]


def render() -> str:
    """The recipe fields' help, rendered now from the installed packages."""
    # lazy: loads TRL; keeps `dmpo-trl --help` fast
    from dmpo_trl.cli.script_args import make_parser  # not via cli.train, which imports this module

    parser = make_parser()
    formatter = parser.formatter_class(prog="dmpo-trl train", width=WIDTH)  # TRL's: with "(default: ...)"
    for title, actions in field_groups(parser):
        formatter.start_section(title)
        formatter.add_arguments(actions)
        formatter.end_section()
    return formatter.format_help()


def recipe_help() -> str:
    """The shipped text when its stamp matches the installed packages and DMPO's sources, else a live rendering."""
    if HELP_FILE.is_file():
        shipped, _, text = HELP_FILE.read_text(encoding="utf-8").partition("\n")
        modules = [part.split("@")[0] for part in shipped.split() if "@" in part]
        if shipped == stamp(modules):
            return text
    return render()


def write() -> Path:
    """Rewrite `train_help.txt` for the installed packages and the current sources (atomically)."""
    tmp = HELP_FILE.with_suffix(".txt.tmp")
    tmp.write_text(f"{stamp(field_modules())}\n{render()}", encoding="utf-8")
    tmp.replace(HELP_FILE)
    return HELP_FILE


if __name__ == "__main__":
    print(f"wrote {write()}")
