"""docs/dmpo_trainer.md holds the template table exactly as scripts/template_table.py prints it."""

import importlib.util
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def test_docs_template_table_is_the_scripts_output():
    spec = importlib.util.spec_from_file_location("template_table", ROOT / "scripts" / "template_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.table() in (ROOT / "docs" / "dmpo_trainer.md").read_text()
