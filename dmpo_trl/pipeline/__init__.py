"""The authors' whole pipeline on the project's environments, one command: SFT -> explore -> pairs -> DMPO (or
multi-turn DPO) -> evaluate, each stage cached and resumable, one report with plots.

* `config`: `PipelineConfig` and the recipe loader (``recipes/<model>/pipeline/*.yaml``);
* `sft`: the SFT stage (TRL's `SFTTrainer` on the action tokens of expert trajectories);
* `stages`: the stage functions; `cache`: caching and resuming; `runner`: `run_pipeline`;
* `stats`: 95% bootstrap intervals, exact McNemar tests, minimum detectable effects; `report`: ``report.md``, plots.

Run: ``dmpo-trl pipeline --config recipes/smollm2-135m-instruct/pipeline/experiment.yaml`` (or
``python -m dmpo_trl.pipeline ...``).
"""
