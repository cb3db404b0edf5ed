"""Rates with intervals and their reports: metrics, judge calibration, printed tables, plots, MLflow runs, comparisons."""
