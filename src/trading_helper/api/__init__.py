"""The HTTP API (FastAPI): ``create_app(runtime)`` in :mod:`trading_helper.api.app`."""
