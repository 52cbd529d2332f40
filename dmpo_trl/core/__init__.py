"""The TRL extension: `DMPOConfig`, `DMPOTrainer` and what they need, importing nothing else of `dmpo_trl`.

Read top-down in the order data flows: `rows` (a preference row -> tokenized columns), `weights` (turn weights),
`collator` and `packing` (the batch), `attention` and `lm_head` (the forward pass), `objective` (the score and every
loss type), `ref_cache` (reference scores once), `config` and `trainer` (TRL's classes), `model_card`, `checkpoints`
(complete checkpoints, a full disk named, no Hub token on disk), `files` (safe names, atomic writes, the output
lock), `trackers` (a missing `report_to` tracker refused), `_import_noise` (the three lines installed bitsandbytes /
DeepSpeed print, dropped) and `_compat` (every dependence on TRL / transformers internals).
"""
