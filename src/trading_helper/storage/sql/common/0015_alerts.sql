-- Alerts (issue 15): rules, their triggers and every delivery attempt. The same relations on
-- both flavours (plain tables: a few rows per trigger, nothing to aggregate).

-- A rule as validated by alerts/rules.py (spec: on, left, op, value | right, repeat,
-- cooldown_s, channels, name); a deleted rule is kept (deleted_at) so its history stays.
CREATE TABLE alert_rules (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instrument_id       integer NOT NULL REFERENCES instruments (id),
    right_instrument_id integer REFERENCES instruments (id),
    spec                jsonb NOT NULL,
    enabled             boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    last_fired_at       timestamptz,   -- exchange time of the last trigger (the cool-down's start)
    fired_count         bigint NOT NULL DEFAULT 0
);
CREATE INDEX alert_rules_live_idx ON alert_rules (id) WHERE deleted_at IS NULL;

-- One row per trigger; idempotency_key is the same for the same trigger (a replay after a restart
-- inserts nothing), and receivers get it to drop repeats.
CREATE TABLE alert_triggers (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id         bigint NOT NULL REFERENCES alert_rules (id),
    idempotency_key text NOT NULL UNIQUE,
    observed_at     timestamptz NOT NULL,   -- the tick's exchange time or the candle's bucket
    fired_at        timestamptz NOT NULL DEFAULT now(),
    payload         jsonb NOT NULL
);
CREATE INDEX alert_triggers_rule_idx ON alert_triggers (rule_id, fired_at DESC);

-- Every delivery attempt: channel is "webhook" or "telegram", target the URL or chat id.
CREATE TABLE alert_deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger_id   bigint NOT NULL REFERENCES alert_triggers (id),
    channel      text NOT NULL,
    target       text NOT NULL,
    attempt      integer NOT NULL,
    ok           boolean NOT NULL,
    status       integer,          -- the HTTP status, when there was an answer
    error        text,             -- why it failed (redacted)
    attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_deliveries_trigger_idx ON alert_deliveries (trigger_id, attempted_at);

-- Grafana's alert-history panel: triggers, and the attempts without their targets (a webhook URL
-- may carry a token).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
        GRANT SELECT ON alert_triggers TO grafana_reader;
        GRANT SELECT (id, trigger_id, channel, attempt, ok, status, attempted_at) ON alert_deliveries
            TO grafana_reader;
    END IF;
END $$;

COMMENT ON TABLE alert_rules IS 'Alert rules (alerts/rules.py); deleted rules kept for their history.';
COMMENT ON TABLE alert_triggers IS 'Every alert trigger, with its idempotency key.';
COMMENT ON TABLE alert_deliveries IS 'Every delivery attempt of a trigger (webhook, Telegram).';
