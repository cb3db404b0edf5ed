"""Preference data: paper-format rows, local files, synthetic pairs."""
