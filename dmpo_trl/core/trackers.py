"""Trackers (`report_to`): a missing one is refused with one line that names the package and the extra.

transformers builds one callback per `report_to` entry when the Trainer is created and raises a `RuntimeError`
whose advice does not fit this project (TensorBoard's says "update your PyTorch version or install tensorboardX").
`check_report_to` asks transformers' own availability checks first, so `DMPOTrainer` (and `dmpo-trl train`, before it
reads the data) fails with `pip install 'dmpo-trl[tracking]'` instead. TensorBoard and trackio (TRL's default
tracker, a local dashboard: `trackio show`) are the ones the `tracking` extra installs; the other integrations
keep transformers' own errors, which name their package.
"""

from __future__ import annotations

from collections.abc import Iterable


__all__ = ["TRACKING_EXTRA", "MissingTrackerError", "check_report_to"]

TRACKING_EXTRA = "pip install 'dmpo-trl[tracking]'"

#: report_to name -> (transformers' availability check, what to install)
_EXTRA = {
    "tensorboard": ("is_tensorboard_available", f"{TRACKING_EXTRA} (or pip install tensorboard)"),
    "trackio": ("is_trackio_available", f"{TRACKING_EXTRA} (or pip install trackio)"),
}


class MissingTrackerError(ImportError, RuntimeError):
    """A tracker in `report_to` is not installed. An `ImportError` (a one-line CLI error) and a `RuntimeError`
    (what transformers raises in its place, so code written for DPOTrainer catches it too)."""


def check_report_to(report_to: str | Iterable[str] | None) -> None:
    """Raise `MissingTrackerError` for the first of `report_to` (TensorBoard, trackio) that is not installed."""
    import transformers.integrations as integrations

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in names:
        if name not in _EXTRA:
            continue
        check, install = _EXTRA[name]
        if not getattr(integrations, check)():
            raise MissingTrackerError(f"report_to={name!r} needs {name}, which is not installed: {install}")
