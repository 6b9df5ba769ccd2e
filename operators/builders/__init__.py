"""Pure desired-state builders: spec + observed state in, next actions + status out.

Nothing here talks to a server or reads a clock; handlers pass `now` in. That keeps the
reconciliation logic testable in milliseconds and the same after a restart.
"""
