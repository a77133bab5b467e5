"""The simulator broker (``BROKER=sim``): a synthetic market that looks like NSE's.

* :mod:`.contracts`: underlyings, expiries, strike steps, Kite-style symbols and tokens
* :mod:`.master`: the instrument master (``sim_instruments``)
* :mod:`.pricing`: futures at the forward, options by Black-76 from a smile
* :mod:`.market`: each underlying's seeded walk over NSE sessions
* :mod:`.bars`: broker history; :mod:`.feed`: the live feed; :mod:`.broker`: ``SimBroker``
"""

from trading_helper.brokers.sim.broker import SimBroker
from trading_helper.brokers.sim.feed import SimFeed
from trading_helper.brokers.sim.master import sim_instruments

__all__ = ["SimBroker", "SimFeed", "sim_instruments"]
