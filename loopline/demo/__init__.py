"""The closed-loop demo: one command that trains, serves, drifts, retrains and promotes.

An outer layer like the CLI: it may import every subsystem, and nothing imports it.
"""
