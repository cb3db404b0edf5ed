"""Running an experiment: the one execute (in process or on Ray actors), Ray, the Parquet store, MLflow tracking, provenance."""
