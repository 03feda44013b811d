"""`ranklab export-all` / `ranklab import-all`: every table, the model artifacts and the signing key
in one verified archive, restorable into an empty database of either backend."""
