"""The column schema of a prepared DMPO dataset: what row preparation writes, the collator reads and the store keys on.

A prepared row (`dmpo_trl.core.rows.checks.prepare_pair`) holds `TOKENIZED_COLUMNS`; precomputing the reference adds
`REFERENCE_COLUMNS`; `DataCollatorForDMPO` reads `COLLATOR_COLUMNS`.
"""

from __future__ import annotations


__all__ = ["COLLATOR_COLUMNS", "REFERENCE_COLUMNS", "TOKENIZED_COLUMNS"]

#: The tokenized pair, as `prepare_pair` returns it: token ids of the shared prompt and of each side after it, the
#: per-token action index of each side (``-1``: not an action), ``T`` of each side, and the actions each side keeps
#: after truncation at ``max_length``.
TOKENIZED_COLUMNS = (
    "prompt_ids",
    "chosen_ids",
    "rejected_ids",
    "chosen_turn_ids",
    "rejected_turn_ids",
    "chosen_num_turns",
    "rejected_num_turns",
    "chosen_kept_turns",
    "rejected_kept_turns",
)
#: DMPO-weighted reference scores, added by `precompute_ref_log_probs`.
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
#: What `DataCollatorForDMPO` reads (the kept-turn counts it recomputes from the truncation).
COLLATOR_COLUMNS = TOKENIZED_COLUMNS[:7] + REFERENCE_COLUMNS
