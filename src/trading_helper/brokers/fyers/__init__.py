"""Fyers API v3: login, symbol masters, history, and the HSM data socket (own asyncio client)."""
