"""KFP components: load features, validate data, train, evaluate, register."""
