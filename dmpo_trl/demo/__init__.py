"""The main job: an offline demonstration of the whole loop on an embedded default model.

* `main_job`: pairs from a real environment -> DMPO (LoRA) -> evaluation before/after -> report
  (``python -m dmpo_trl.demo.main_job``, ``dmpo-trl main``, ``bash scripts/main.sh``).
* `report`: its plots and Markdown report; `turn_rewards`: per-turn implicit rewards of pairs.
"""
