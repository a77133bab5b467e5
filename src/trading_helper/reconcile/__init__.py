"""Reconciliation: a session's live 1m candles held against the broker's 1m history."""
