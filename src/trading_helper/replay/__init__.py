"""Replay: stored ticks played back through the live WebSocket protocol (``api/ws.py``)."""
