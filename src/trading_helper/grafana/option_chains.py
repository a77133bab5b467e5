"""The option chains dashboard: OI by strike at the range's end, PCR, ATM IV, ATM straddle, max
pain and the forward over time, from the minute snapshots of the followed chains
(``option_chain_snapshots``, ``option_quote_snapshots``; ``POST /api/options/subscribe`` follows a
chain). ``$instrument`` is the underlying's instruments.id, ``$expiry`` a date among its followed
expiries. Every query runs as the read-only ``grafana_reader`` role.
"""

from __future__ import annotations

from trading_helper.grafana.panels import Json, Panel, dashboard, query_variable

UID = "th-option-chains"

UNDERLYING_CHOICES = """
SELECT DISTINCT i.exchange || ':' || i.tradingsymbol AS __text, i.id AS __value
FROM option_chain_follows f JOIN instruments i ON i.id = f.underlying_id
ORDER BY 1
"""

EXPIRY_CHOICES = """
SELECT expiry::text AS __text, expiry::text AS __value FROM option_chain_follows
WHERE underlying_id = $instrument ORDER BY expiry DESC
"""

_CHAIN = "underlying_id = $instrument AND expiry = '$expiry'::date"

# the snapshot at (or last before) the end of the time range, one bar pair per strike
OI_BY_STRIKE = f"""
SELECT strike::text AS strike,
       sum(oi) FILTER (WHERE option_type = 'CE') AS "CE OI",
       sum(oi) FILTER (WHERE option_type = 'PE') AS "PE OI"
FROM option_quote_snapshots
WHERE {_CHAIN}
  AND as_of = (SELECT max(as_of) FROM option_chain_snapshots WHERE {_CHAIN} AND as_of <= $__timeTo())
GROUP BY strike
ORDER BY strike
"""

PCR = f"""
SELECT as_of AS time, pcr_oi AS "PCR (OI)", pcr_volume AS "PCR (volume)"
FROM option_chain_snapshots WHERE {_CHAIN} AND $__timeFilter(as_of)
ORDER BY as_of
"""

ATM_IV = f"""
SELECT as_of AS time, 100 * atm_iv AS "ATM IV"
FROM option_chain_snapshots WHERE {_CHAIN} AND $__timeFilter(as_of)
ORDER BY as_of
"""

STRADDLE = f"""
SELECT as_of AS time, straddle AS "ATM straddle"
FROM option_chain_snapshots WHERE {_CHAIN} AND $__timeFilter(as_of)
ORDER BY as_of
"""

MAX_PAIN = f"""
SELECT as_of AS time, max_pain AS "max pain", forward, spot
FROM option_chain_snapshots WHERE {_CHAIN} AND $__timeFilter(as_of)
ORDER BY as_of
"""


def build() -> Json:
    panels = [
        Panel(
            "OI by strike",
            "barchart",
            OI_BY_STRIKE,
            width=24,
            height=10,
            description="Call and put open interest per strike in the last snapshot up to the range's end.",
            unit="short",
            options={"xField": "strike", "orientation": "vertical", "groupWidth": 0.8, "barWidth": 0.9},
        ),
        Panel("PCR", "timeseries", PCR, description="Put-call ratio of open interest and of volume."),
        Panel(
            "ATM IV",
            "timeseries",
            ATM_IV,
            unit="percent",
            description="Mean Black-76 IV of the ATM call and put (per cent).",
        ),
        Panel("ATM straddle", "timeseries", STRADDLE, description="ATM call + put (their IV prices)."),
        Panel(
            "Max pain, forward and spot",
            "timeseries",
            MAX_PAIN,
            description="The strike minimising the writers' payout, the parity forward, the spot.",
        ),
    ]
    variables = [
        query_variable("instrument", "Underlying", UNDERLYING_CHOICES),
        query_variable("expiry", "Expiry", EXPIRY_CHOICES),
    ]
    return dashboard(
        UID,
        "Trading Helper: option chains",
        panels,
        variables=variables,
        time_from="now-6h",
        refresh="1m",
        tags=["trading-helper", "options"],
        description="OI by strike, PCR, ATM IV, straddle and max pain of the followed option chains.",
    )
