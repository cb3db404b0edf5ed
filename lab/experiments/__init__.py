"""One module per experiment (its config beside it): plan, prepare, work, grade and report over the shared flow."""
