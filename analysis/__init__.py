"""Pure analysis: tensors and DataFrames in, figures and fits out. No model is loaded here and there is no Ray or
MLflow; argument parsing (and an MLflow run-id lookup) lives only under each module's `if __name__ == "__main__":`,
so every fit reruns locally from stored results (`python -m analysis.<name> --run <path or MLflow run id>`)."""
