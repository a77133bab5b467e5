"""`trading-helper demo`: the whole system on one machine with only Python."""
