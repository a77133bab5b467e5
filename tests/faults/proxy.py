"""The TCP fault proxy lives in the package (the soak benchmark runs one); tests import it from here."""

from trading_helper.bench.faultproxy import FaultProxy

__all__ = ["FaultProxy"]
