"""The drift monitor service and the Prometheus metrics it exports."""
