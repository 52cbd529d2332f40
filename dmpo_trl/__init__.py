"""dmpo_trl: DMPO (Direct Multi-Turn Preference Optimization) for language agents on top of TRL.

`DMPOConfig` and `DMPOTrainer` are imported lazily so that the pure loss (`dmpo_trl.loss`) and the tokenization
(`dmpo_trl.tokenization`) can be used without importing TRL. Importing the package drops the three lines
bitsandbytes and DeepSpeed print merely because they are installed (`dmpo_trl._import_noise`).
"""

from typing import TYPE_CHECKING

from . import _import_noise


__version__ = "0.1.0"

__all__ = ["DMPOConfig", "DMPOTrainer", "DataCollatorForDMPO", "DMPODataError", "__version__"]

_LAZY = {
    "DMPOConfig": "dmpo_trl.config",
    "DMPOTrainer": "dmpo_trl.trainer",
    "DataCollatorForDMPO": "dmpo_trl.collator",
    "DMPODataError": "dmpo_trl.errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from .collator import DataCollatorForDMPO
    from .config import DMPOConfig
    from .errors import DMPODataError
    from .trainer import DMPOTrainer


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dmpo_trl' has no attribute {name!r}")
