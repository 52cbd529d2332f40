"""The TRL versions dmpo_trl is tested against, checked once, loudly, when this module is first imported.

`DMPOTrainer` overrides `DPOTrainer` hooks (`_prepare_dataset`, `_precompute_ref_logps`, `compute_ref_log_probs`,
`_compute_loss`) and reads the outputs of the fused LM head added by `add_fused_lm_head`; these changed three times
between TRL 1.13 and 1.16, so any other TRL release is refused instead of silently computing something else.
`dmpo_trl.core.config` and `dmpo_trl.core.trainer` import this module before they import TRL.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version


TRL_MIN = Version("1.16.0")
TRL_MAX_EXCLUSIVE = Version("1.17.0")


def supported_trl_range() -> str:
    return f">={TRL_MIN},<{TRL_MAX_EXCLUSIVE}"


def check_trl_version(installed: str | None = None) -> None:
    """Raise `ImportError` unless the installed TRL is in the tested range."""
    if installed is None:
        try:
            installed = version("trl")
        except PackageNotFoundError as err:
            raise ImportError(f"dmpo_trl needs trl{supported_trl_range()}, which is not installed.") from err
    base = Version(Version(installed).base_version)  # 1.17.0rc1 counts as 1.17.0
    if not TRL_MIN <= base < TRL_MAX_EXCLUSIVE:
        raise ImportError(
            f"dmpo_trl is tested with trl{supported_trl_range()} and relies on DPOTrainer internals that change "
            f"between releases; found trl {installed}. Install a supported version: pip install 'trl{supported_trl_range()}'."
        )


check_trl_version()
