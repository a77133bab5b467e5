-- Option chains (issue 14). The chains followed: POST /api/options/subscribe keeps `strikes`
-- strikes each side of ATM subscribed as the ATM moves, and the chain is snapshotted every minute.
CREATE TABLE option_chain_follows (
    underlying_id integer NOT NULL REFERENCES instruments (id),
    expiry        date NOT NULL,
    strikes       integer NOT NULL CHECK (strikes BETWEEN 1 AND 100),
    -- the contracts this follow subscribed (it unsubscribes only these when the ATM moves away)
    subscribed    integer[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (underlying_id, expiry)
);

-- One row per chain and minute: the chain-level figures (the series of /api/options/series).
-- Both snapshot tables are declared once here; the flavour's 0013 makes each a hypertable
-- (TimescaleDB) or a table partitioned by UTC day (plain PostgreSQL), with the same name.
CREATE TABLE option_chain_snapshots (
    as_of                timestamptz NOT NULL,
    underlying_id        integer NOT NULL,
    expiry               date NOT NULL,
    spot                 double precision,
    forward              double precision,
    forward_source       text CHECK (forward_source IN ('parity', 'future')),
    rate                 double precision NOT NULL,
    time_to_expiry_years double precision NOT NULL,
    atm_strike           double precision,
    pcr_oi               double precision,
    pcr_volume           double precision,
    max_pain             double precision,
    atm_iv               double precision,
    straddle             double precision,
    -- the future of the chain (the parity fallback) and its OI build-up over the same window
    future_id            integer,
    future_instrument    text,
    future_ltp           double precision,
    future_oi            bigint,
    future_oi_change     bigint,
    future_buildup       text,
    PRIMARY KEY (underlying_id, expiry, as_of)
);

-- One row per contract of a snapshotted chain: its quote and what was computed from it.
CREATE TABLE option_quote_snapshots (
    as_of          timestamptz NOT NULL,
    underlying_id  integer NOT NULL,
    expiry         date NOT NULL,
    instrument_id  integer NOT NULL,
    tradingsymbol  text NOT NULL,
    strike         double precision NOT NULL,
    option_type    text NOT NULL CHECK (option_type IN ('CE', 'PE')),
    ltp            double precision,
    bid            double precision,
    ask            double precision,
    iv_price       double precision,
    oi             bigint,
    oi_change      bigint,
    volume         bigint,
    iv             double precision,
    iv_reason      text,
    delta          double precision,
    gamma          double precision,
    theta          double precision,
    vega           double precision,
    buildup        text,
    PRIMARY KEY (underlying_id, expiry, as_of, instrument_id)
);

-- minute snapshots are kept 90 days (a quarter of expiries), both tables alike
INSERT INTO retention_policy VALUES ('option_snapshots', interval '90 days');
