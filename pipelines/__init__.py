"""KFP pipeline definitions; compiled IR YAML is kept beside them as golden files."""
