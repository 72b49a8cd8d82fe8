"""Registration-time ingest: what users have (estimators, files, modules) becomes an artifact
directory with a signature, converted where that is verified and checked before it is stored."""
