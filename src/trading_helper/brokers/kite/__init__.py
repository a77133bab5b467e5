"""Zerodha Kite Connect: REST (login, instruments, history) and the binary ticker.

``broker.KiteBroker`` is the entry point; ``parsing`` holds the pure wire parsers. Nothing is
imported here so that ``import trading_helper.brokers.kite.parsing`` stays light.
"""
