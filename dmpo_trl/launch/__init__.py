"""Launch plumbing for `dmpo-trl train`: argument dataclasses, data and model loading, accelerate configs, model card.

The training entry point itself is `dmpo_trl.train` (`python -m dmpo_trl.train --config recipe.yaml`), which is also
the target `accelerate launch -m dmpo_trl.train` runs on every process.
"""
