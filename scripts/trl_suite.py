"""Run TRL's own DPOTrainer test suite offline, as it is (DPOTrainer) and with the two names swapped (DMPOTrainer).

    git clone --depth 1 -b v1.16.0 https://github.com/huggingface/trl /tmp/trl    # once, for its tests/
    .venv/bin/python scripts/trl_suite.py --trl-tests /tmp/trl/tests               # offline from here on
    .venv/bin/python scripts/trl_suite.py --trl-tests /tmp/trl/tests --trainer dmpo -k "loss_types"

TRL's tests are not in its wheel or sdist, and this repository does not copy them: give the `tests/` directory of
a checkout of the installed version. For each trainer the script copies `test_dpo_trainer.py` into a run directory
next to the offline harness (scripts/trl_suite/harness: a conftest that builds the `trl-internal-testing/*` tiny
models and datasets locally, see scripts/trl_suite/offline_harness), with ``DPOTrainer`` -> ``DMPOTrainer`` and
``DPOConfig`` -> ``DMPOConfig`` for the DMPO run (the import line becomes ``from dmpo_trl import ...``; nothing else
changes), runs pytest on it, and writes `<out>/<trainer>/junit.xml`, `<out>/<trainer>/pytest.log` and
`<out>/summary.md`: the counts per trainer and every test DPOTrainer passes that DMPOTrainer does not.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "scripts" / "trl_suite"
SWAPS = ((r"\bDPOTrainer\b", "DMPOTrainer"), (r"\bDPOConfig\b", "DMPOConfig"))
IMPORT = "from trl import DPOConfig, DPOTrainer\n"
PYTEST_INI = (
    "[pytest]\nmarkers =\n    slow: slow tests (TRL marker)\nfilterwarnings =\n    ignore::DeprecationWarning\n"
)


def swap_names(source: str) -> str:
    """TRL's test module with DMPOTrainer / DMPOConfig in place of DPOTrainer / DPOConfig (imports included)."""
    if IMPORT not in source:
        raise SystemExit(f"trl_suite: the test module does not import the trainer as {IMPORT.strip()!r}")
    source = source.replace(IMPORT, "from dmpo_trl import DMPOConfig, DMPOTrainer\n")
    for pattern, name in SWAPS:
        source = re.sub(pattern, name, source)
    return source


#: What `prepare` and `run` write in a run folder: the only folder contents a rerun removes.
RUN_FILES = {"trl_tests", "pytest.ini", "junit.xml", "pytest.log", ".pytest_cache", "__pycache__"}


def prepare(run_dir: Path, test_file: Path, trainer: str) -> Path:
    if run_dir.exists():
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES)
        if foreign or run_dir.is_symlink():
            raise SystemExit(
                f"trl_suite: {run_dir} holds files it did not write ({foreign[:3]}): choose another --out"
            )
        shutil.rmtree(run_dir)
    pkg = run_dir / "trl_tests"
    pkg.mkdir(parents=True)
    for name in ("__init__.py", "conftest.py", "testing_utils.py"):
        shutil.copy(SUITE / "harness" / name, pkg / name)
    source = test_file.read_text(encoding="utf-8")
    (pkg / "test_dpo_trainer.py").write_text(swap_names(source) if trainer == "dmpo" else source, encoding="utf-8")
    (run_dir / "pytest.ini").write_text(PYTEST_INI)
    return pkg


def run(trainer: str, test_file: Path, out: Path, extra: list[str]) -> dict[str, str]:
    run_dir = out / trainer
    pkg = prepare(run_dir, test_file, trainer)
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(run_dir), str(SUITE), str(ROOT), env.get("PYTHONPATH", "")]),
        TRL_OFFLINE_CACHE=env.get("TRL_OFFLINE_CACHE", str(ROOT / ".cache" / "trl_suite")),
        TOKENIZERS_PARALLELISM="false",
        OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"),
    )
    cmd = [sys.executable, "-m", "pytest", str(pkg / "test_dpo_trainer.py"), "-p", "no:cacheprovider", "-q", "-rfEs"]
    cmd += ["--rootdir", str(run_dir), "-c", str(run_dir / "pytest.ini"), "--junitxml", str(run_dir / "junit.xml")]
    print(f"trl_suite: {trainer}: {' '.join(cmd[2:] + extra)}", flush=True)
    with open(run_dir / "pytest.log", "w") as log:
        subprocess.call(cmd + extra, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    return outcomes(run_dir / "junit.xml")


def outcomes(junit: Path) -> dict[str, str]:
    """``{test id: "passed" | "failed" | "error" | "skipped"}`` from a pytest junit file."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        kinds = {child.tag for child in case}
        result[name] = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        result[name] = {"failure": "failed"}.get(result[name], result[name])
    return result


def summary(results: dict[str, dict[str, str]]) -> str:
    lines = ["| trainer | passed | failed | errors | skipped | total |", "| --- | --- | --- | --- | --- | --- |"]
    for trainer, res in results.items():
        counts = [sum(v == k for v in res.values()) for k in ("passed", "failed", "error", "skipped")]
        lines.append(f"| {trainer} | " + " | ".join(map(str, counts)) + f" | {len(res)} |")
    if {"dpo", "dmpo"} <= results.keys():
        dpo, dmpo = results["dpo"], results["dmpo"]
        lost = sorted(t for t, v in dpo.items() if v == "passed" and dmpo.get(t) != "passed")
        gained = sorted(t for t, v in dmpo.items() if v == "passed" and dpo.get(t) != "passed")
        lines += [
            "",
            f"Passed by DPOTrainer, not by DMPOTrainer ({len(lost)}):",
            *[f"- {t}: {dmpo.get(t)}" for t in lost],
        ]
        lines += [
            "",
            f"Passed by DMPOTrainer, not by DPOTrainer ({len(gained)}):",
            *[f"- {t}: {dpo.get(t)}" for t in gained],
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trl-tests", required=True, type=Path, help="tests/ of a huggingface/trl checkout")
    parser.add_argument("--trainer", choices=["dpo", "dmpo", "both"], default="both")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "trl_suite")
    args, extra = parser.parse_known_args(argv)
    test_file = args.trl_tests / "test_dpo_trainer.py"
    if not test_file.is_file():
        raise SystemExit(f"trl_suite: {test_file} does not exist (give the tests/ directory of a TRL checkout)")
    trainers = ["dpo", "dmpo"] if args.trainer == "both" else [args.trainer]
    results = {t: run(t, test_file, args.out, extra) for t in trainers}
    text = summary(results)
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
