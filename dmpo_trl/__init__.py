"""dmpo_trl: DMPO (Direct Multi-Turn Preference Optimization) for language agents on top of TRL."""

__version__ = "0.1.0"
