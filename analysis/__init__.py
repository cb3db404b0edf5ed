"""Pure analysis: tensors and DataFrames in, figures and fits out. No Ray, MLflow or argparse here, so every fit
reruns locally from stored results (`python -m analysis.<name> --run <path or MLflow run id>`)."""
