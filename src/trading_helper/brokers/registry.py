"""BROKER=kite|fyers|sim -> one broker instance per process (never one per request)."""

from __future__ import annotations

from trading_helper.accounts import Account
from trading_helper.brokers.base import Broker
from trading_helper.config import Settings
from trading_helper.errors import ConfigError


def build_broker(settings: Settings, account: Account | None = None) -> Broker:
    """The configured broker, as ``account`` (default: the broker's first account, the one of
    the single-account settings when no ``<BROKER>_ACCOUNTS`` is set); ConfigError at once when
    it lacks its keys (``BROKER=kite`` without ``KITE_API_KEY``)."""
    settings.require_broker_keys()
    name = settings.BROKER
    if name in ("kite", "fyers"):
        settings = settings.for_account(account or settings.accounts(name)[0])
    if name == "kite":
        from trading_helper.brokers.kite.broker import KiteBroker

        return KiteBroker(settings)
    if name == "fyers":
        from trading_helper.brokers.fyers.broker import FyersBroker

        return FyersBroker(settings)
    if name == "sim":
        from trading_helper.brokers.sim import SimBroker

        return SimBroker(settings)
    raise ConfigError(f"BROKER={name!r} is not one of kite, fyers, sim")
