"""MLflow: experiments, lineage tags, the registry and its champion/challenger aliases."""
