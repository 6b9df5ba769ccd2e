"""The `loopline` command line."""
