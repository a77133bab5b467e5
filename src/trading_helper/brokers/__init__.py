"""Broker adapters: one folder per broker behind the interface in :mod:`.base`."""
