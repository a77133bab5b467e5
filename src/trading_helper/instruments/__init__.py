"""Instruments as callers name them (``refs``: the one reference grammar)."""
