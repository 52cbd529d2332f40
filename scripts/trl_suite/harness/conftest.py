"""Offline harness for TRL's own DPOTrainer tests (tests/test_dpo_trainer.py of huggingface/trl), copied next to
this file by scripts/trl_suite.py.

Nothing is fetched: the `trl-internal-testing/*` model repos are built once into a Hub cache (`HF_HUB_CACHE`) read with
`HF_HUB_OFFLINE=1` (`offline_harness.tiny_hub`), and `datasets.load_dataset("trl-internal-testing/...", config)` is
redirected to parquet files written from TRL's dataset-generation scripts (`offline_harness.datasets_offline`).

Environment:
    TRL_OFFLINE_CACHE   where the built repos and parquet files are kept (scripts/trl_suite.py sets it to
                        .cache/trl_suite in the repository); reused while `tiny_hub.HARNESS_VERSION` is unchanged.
                        Everything else (datasets' arrow cache, remote-code modules) goes to a fresh temporary
                        directory per session.
"""

import os
import sys
import tempfile
from pathlib import Path


CACHE = Path(os.environ["TRL_OFFLINE_CACHE"]).resolve()
_SESSION = Path(tempfile.mkdtemp(prefix="trl-offline-"))
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_CACHE=str(CACHE / "hub"),
    HF_DATASETS_CACHE=str(_SESSION / "datasets"),
    HF_MODULES_CACHE=str(_SESSION / "modules"),
)
if "huggingface_hub" in sys.modules:  # imported before us (another plugin): point its constants at the cache too
    import huggingface_hub.constants as _c

    _c.HF_HUB_OFFLINE = True
    _c.HF_HUB_CACHE = str(CACHE / "hub")

from offline_harness.datasets_offline import make_load_dataset  # noqa: E402
from offline_harness.tiny_hub import build_hub_cache  # noqa: E402


build_hub_cache(CACHE / "hub")

import datasets  # noqa: E402


datasets.load_dataset = make_load_dataset(datasets.load_dataset, CACHE / "datasets_src")

# CPU adaptation. TRL's configs default to `bf16=True` (`_BaseConfig.__post_init__`: `bf16 = not fp16` when unset), and
# transformers' TrainingArguments refuses bf16 without a bf16-capable accelerator, so on a CPU-only machine every test
# building a config would fail before reaching the trainer. Without CUDA, an unset `bf16` defaults to False (fp32)
# instead; an explicit `bf16=True` is left alone. The same for DPOConfig and DMPOConfig (DMPOConfig subclasses it).
import torch  # noqa: E402
from trl.trainer import base_config as _base_config  # noqa: E402


_original_post_init = _base_config._BaseConfig.__post_init__


def _cpu_post_init(self):
    if getattr(self, "bf16", None) is None and not torch.cuda.is_available():
        self.bf16 = False
    _original_post_init(self)


if not torch.cuda.is_available():
    _base_config._BaseConfig.__post_init__ = _cpu_post_init
