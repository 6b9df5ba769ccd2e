"""Factory sensor data: generator, schemas, Feast access and the data quality gate."""
