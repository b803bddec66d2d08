"""The pipeline's stages, one module per DVC stage. Each imports only helio_core (never another stage) and has
`run(params, workspace, runtime, progress) -> metrics`, which reads and writes only the paths dvc.yaml gives it,
and `summary(metrics) -> lines`, what `helio <stage>` prints when it is done."""
