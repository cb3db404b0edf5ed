"""Thin entry points: `python -m jobs.<name> --config configs/<x>.yaml`, the same locally and under `ray job submit`."""
