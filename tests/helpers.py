"""Test helpers live in `dmpo_trl.testing` (benchmarks and doc snippets use them too); re-exported here."""

from dmpo_trl.testing import *  # noqa: F401,F403
from dmpo_trl.testing import FAMILIES, agent_pair, conv, dataset_rows, make_tokenizer, save_tiny_model, tiny_model, write_jsonl  # noqa: F401
