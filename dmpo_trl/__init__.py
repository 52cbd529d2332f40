"""dmpo_trl: DMPO (Direct Multi-Turn Preference Optimization) for language agents on top of TRL.

The TRL extension is `dmpo_trl.core`; the tools around it are `data`, `envs`, `pipeline`, `demo` and `cli`, with
`models` (the model loader they share). `DMPOConfig`, `DMPOTrainer`, `DataCollatorForDMPO` and `DMPODataError` are
imported lazily, so that the weights and the objective (`dmpo_trl.core.weights`, `dmpo_trl.core.objective`) and the
tokenization (`dmpo_trl.core.rows.tokenization`) can be used without importing TRL. Importing the package drops the
three lines bitsandbytes and DeepSpeed print merely because they are installed (`dmpo_trl.core._import_noise`).
"""

import importlib
from typing import TYPE_CHECKING

from .core import _import_noise


__version__ = "0.1.0"

__all__ = ["DMPOConfig", "DMPOTrainer", "DataCollatorForDMPO", "DMPODataError", "__version__"]

_LAZY = {
    "DMPOConfig": "dmpo_trl.core.config",
    "DMPOTrainer": "dmpo_trl.core.trainer",
    "DataCollatorForDMPO": "dmpo_trl.core.collator",
    "DMPODataError": "dmpo_trl.core.errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from .core.collator import DataCollatorForDMPO
    from .core.config import DMPOConfig
    from .core.errors import DMPODataError
    from .core.trainer import DMPOTrainer


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dmpo_trl' has no attribute {name!r}")
