"""`dmpo-trl train --help`: fast (no TRL/torch import before parsing), grouped as `trl dpo --help`, DMPO's first."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from dmpo_trl.cli import train_help
from tests.cli.helpers import REPO_ROOT, cli_cmd, subprocess_env


GROUPS = [
    "DMPO training (DMPOConfig's own fields):",
    "DMPO data and model card (DMPOScriptArguments' own fields):",
    "script arguments (trl ScriptArguments):",
    "training (trl DPOConfig and transformers TrainingArguments):",
    "model (trl ModelConfig):",
    "dataset mixtures (trl DatasetMixtureConfig):",
]


def test_train_help_is_fast_and_grouped_with_dmpo_fields_first():
    start = time.monotonic()
    proc = subprocess.run(
        cli_cmd("train", "--help"), cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert wall < 10, f"`dmpo-trl train --help` took {wall:.1f} s"  # ~0.2 s; generous for a loaded machine
    assert proc.stderr == ""  # no import noise either
    headings = [line for line in out.splitlines() if line in GROUPS]
    assert headings == GROUPS
    # each field in its group: DMPO's own first, then trl dpo's order (script, training, model, mixtures)
    positions = [out.index(f"\n  --{name} ") for name in ("gamma", "data_files", "dataset_name", "beta", "use_peft")]
    positions.append(out.index("\n  --datasets "))
    assert positions == sorted(positions)
    assert out.index("--gamma") > out.index(GROUPS[0]) and out.index("--beta") > out.index(GROUPS[3])


def test_train_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom dmpo_trl.cli import main\n"
        "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert re.search(r"^HEAVY \[\]$", proc.stdout, re.M), proc.stdout[-500:] + proc.stderr[-2000:]


def test_shipped_help_matches_the_installed_fields():
    """The shipped text is what the installed TRL/transformers/peft and DMPO's dataclasses render now."""
    stamp, _, text = train_help.HELP_FILE.read_text(encoding="utf-8").partition("\n")
    fix = "rerun `python -m dmpo_trl.cli.train_help` to refresh dmpo_trl/cli/train_help.txt"
    assert stamp == train_help.stamp(train_help.field_modules()), fix
    assert text == train_help.render(), fix
    assert train_help.recipe_help() == text


def test_a_stale_shipped_text_is_never_shown(tmp_path, monkeypatch):
    """A field's module edited (or an installed package changed) since rendering: the help is rendered live."""
    shipped = train_help.HELP_FILE.read_text(encoding="utf-8")
    stamp, _, text = shipped.partition("\n")
    stale = tmp_path / "train_help.txt"
    stale.write_text(stamp.replace("@", "@0", 1) + "\nstale text\n", encoding="utf-8")
    monkeypatch.setattr(train_help, "HELP_FILE", stale)
    assert train_help.recipe_help() == text
