"""Script files for launchers that want a file path rather than `-m dmpo_trl.train`."""
