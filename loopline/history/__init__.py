"""A Model's production history: the ledger of its decisions and the questions asked of it."""
