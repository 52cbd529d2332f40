"""Fixtures of the launch tests: a workspace with a tiny model, its tokenizer and a JSONL dataset on disk."""

import pytest

from tests.cli.helpers import make_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """8 rows, a saved tiny model; modules that need more rows or a recipe override this fixture."""
    return make_workspace(tmp_path_factory.mktemp("ws"), n_rows=8)
