"""No bitsandbytes or DeepSpeed line where the user asked for neither: the README's quick start and `dmpo-trl validate`.

The quick start reaches both libraries through peft and accelerate (DPOTrainer does the same), so `dmpo_trl` drops
their three lines (`dmpo_trl.core._import_noise`); `validate` imports neither (nor TRL, peft or the Trainer).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import subprocess
import sys

import pytest

from dmpo_trl.core import _import_noise
from dmpo_trl.data.io import write_records
from dmpo_trl.testing import dataset_rows, make_tokenizer
from tests.cli.helpers import REPO_ROOT, cli_cmd, subprocess_env


NOISE = re.compile(r"gemm_4bit_forward|publisher trust check|Setting accelerator to CPU|bitsandbytes|DeepSpeed")
INSTALLED = [name for name in ("bitsandbytes", "deepspeed") if importlib.util.find_spec(name) is not None]


def quick_start() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Quick start") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quick_start_prints_no_bitsandbytes_or_deepspeed_line(tmp_path):
    code = (
        quick_start()
        + "\nimport sys\nprint('LOADED', sorted(m for m in ('bitsandbytes', 'deepspeed') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=subprocess_env(TQDM_DISABLE="1"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = [line for line in proc.stdout.splitlines() if line.startswith("LOADED ")]
    out = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if not line.startswith("LOADED "))
    assert not NOISE.search(out), out[-3000:]
    # the libraries were imported (by peft and accelerate, as under DPOTrainer): the filters, not luck, kept it quiet
    assert loaded == [f"LOADED {sorted(INSTALLED)}"]


def test_validate_imports_neither_library_nor_the_trainer_stack(tmp_path):
    data = tmp_path / "data.jsonl"
    write_records(dataset_rows(4, seed=0), data)
    make_tokenizer("qwen2_5").save_pretrained(tmp_path / "tok")
    code = (
        "import sys\nfrom dmpo_trl.cli import main\n"
        f"code = main(['validate', {str(data)!r}, '--model', {str(tmp_path / 'tok')!r}])\n"
        "print('HEAVY', sorted(m for m in ('bitsandbytes', 'deepspeed', 'peft', 'trl') if m in sys.modules))\n"
        "sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-2000:]
    assert not NOISE.search(proc.stdout + proc.stderr)
    # and the command as a user types it
    proc = subprocess.run(
        cli_cmd("validate", str(data), "--model", str(tmp_path / "tok")),
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "valid pairs: 4" in proc.stdout and not NOISE.search(proc.stdout + proc.stderr)


@pytest.mark.parametrize("name", sorted(_import_noise.DROPPED))
def test_each_filter_drops_its_line_and_nothing_else(name, caplog):
    logger = logging.getLogger(name)
    keep = logging.getLogger(f"{name}.child.of.test")  # records of other loggers are not filtered here
    with caplog.at_level(logging.WARNING):
        logger.propagate, propagate = True, logger.propagate
        try:
            logger.warning(_import_noise.DROPPED[name] + " ... (the library's details)")
            logger.warning("any other warning of this library")
        finally:
            logger.propagate = propagate
    # a set: in a long session a record can be captured twice (seen for DeepSpeed's logger); not what this tests
    messages = {record.getMessage() for record in caplog.records if record.name == name}
    assert messages == {"any other warning of this library"}
    assert keep.filters == []
