"""The option chains dashboard: OI by strike at the range's end, PCR, ATM IV, ATM straddle, max
pain and the forward over time, from the minute snapshots of the followed chains
(``option_chain_snapshots``, ``option_quote_snapshots``; ``POST /api/options/subscribe`` follows a
chain). ``$instrument`` is the underlying's instruments.id, ``$expiry`` a date among its followed
expiries. Every query runs as the read-only ``grafana_reader`` role; the queries are in
``storage/sql_dashboards.py``.
"""

from __future__ import annotations

from trading_helper.grafana.panels import Json, Panel, dashboard, query_variable
from trading_helper.storage import sql_dashboards as sql

UID = "th-option-chains"


def build() -> Json:
    panels = [
        Panel(
            "OI by strike",
            "barchart",
            sql.OPTION_OI_BY_STRIKE,
            width=24,
            height=10,
            description="Call and put open interest per strike in the last snapshot up to the range's end.",
            unit="short",
            options={"xField": "strike", "orientation": "vertical", "groupWidth": 0.8, "barWidth": 0.9},
        ),
        Panel(
            "PCR", "timeseries", sql.OPTION_PCR, description="Put-call ratio of open interest and of volume."
        ),
        Panel(
            "ATM IV",
            "timeseries",
            sql.OPTION_ATM_IV,
            unit="percent",
            description="Mean Black-76 IV of the ATM call and put (per cent).",
        ),
        Panel(
            "ATM straddle", "timeseries", sql.OPTION_STRADDLE, description="ATM call + put (their IV prices)."
        ),
        Panel(
            "Max pain, forward and spot",
            "timeseries",
            sql.OPTION_MAX_PAIN,
            description="The strike minimising the writers' payout, the parity forward, the spot.",
        ),
    ]
    variables = [
        query_variable("instrument", "Underlying", sql.OPTION_UNDERLYING_CHOICES),
        query_variable("expiry", "Expiry", sql.OPTION_EXPIRY_CHOICES),
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
