"""Named SQL of alerts: rules, triggers and delivery attempts (migration 15, both flavours)."""

from __future__ import annotations

RULE_COLUMNS = """r.id, r.instrument_id, r.right_instrument_id, r.spec::text AS spec, r.enabled, r.created_at,
r.updated_at, r.last_fired_at, r.fired_count"""

COUNT_RULES = "SELECT count(*) FROM alert_rules WHERE deleted_at IS NULL"
# the count and the insert in one statement under a lock of the table: two concurrent creations
# cannot both pass the limit
LOCK_RULES = "LOCK TABLE alert_rules IN SHARE ROW EXCLUSIVE MODE"
INSERT_RULE = f"""
INSERT INTO alert_rules AS r (instrument_id, right_instrument_id, spec, enabled) VALUES ($1, $2, $3::jsonb, $4)
RETURNING {RULE_COLUMNS}
"""
GET_RULE = f"SELECT {RULE_COLUMNS} FROM alert_rules r WHERE r.id = $1 AND r.deleted_at IS NULL"
LIST_RULES = f"""
SELECT {RULE_COLUMNS} FROM alert_rules r
WHERE r.deleted_at IS NULL AND ($1::integer IS NULL OR r.instrument_id = $1)
ORDER BY r.id LIMIT $2 OFFSET $3
"""
COUNT_LISTED = """
SELECT count(*) FROM alert_rules r WHERE r.deleted_at IS NULL AND ($1::integer IS NULL OR r.instrument_id = $1)
"""
UPDATE_RULE = f"""
UPDATE alert_rules AS r SET instrument_id = $2, right_instrument_id = $3, spec = $4::jsonb, enabled = $5,
       updated_at = now()
WHERE r.id = $1 AND r.deleted_at IS NULL
RETURNING {RULE_COLUMNS}
"""
DELETE_RULE = "UPDATE alert_rules SET deleted_at = now(), enabled = false WHERE id = $1 AND deleted_at IS NULL RETURNING id"
#: the rules the engine follows
LIVE_RULES = (
    f"SELECT {RULE_COLUMNS} FROM alert_rules r WHERE r.enabled AND r.deleted_at IS NULL ORDER BY r.id"
)

#: ids for triggers, reserved ahead ($1 of them) from the table's own identity: a trigger is
#: delivered under its id while it is being stored, not after the commit
RESERVE_TRIGGER_IDS = (
    "SELECT nextval(pg_get_serial_sequence('alert_triggers', 'id')) AS id FROM generate_series(1, $1)"
)
#: a trigger under its reserved id ($6), once: the same idempotency key inserts nothing and answers
#: the id it is stored under (``fresh`` false: stored before, by a retry whose reply was lost or a
#: replay); its rule remembers it, and a rule that fires once is switched off in the same statement
#: (the outer SELECT sees the table as it was before the statement: only an earlier row)
INSERT_TRIGGER = """
WITH t AS (
    INSERT INTO alert_triggers (id, rule_id, idempotency_key, observed_at, payload)
    OVERRIDING SYSTEM VALUE VALUES ($6, $1, $2, $3, $4::jsonb)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
), r AS (
    UPDATE alert_rules SET last_fired_at = $3, fired_count = fired_count + 1,
                           enabled = enabled AND NOT $5::boolean
    WHERE id = $1 AND EXISTS (SELECT 1 FROM t)
)
SELECT id, true AS fresh FROM t
UNION ALL
SELECT id, false FROM alert_triggers WHERE idempotency_key = $2 AND NOT EXISTS (SELECT 1 FROM t)
"""
INSERT_ATTEMPT = """
INSERT INTO alert_deliveries (trigger_id, channel, target, attempt, ok, status, error, attempted_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
#: triggers of the last day with a channel that has neither succeeded nor used up its attempts
#: (delivered again after a restart: at least once)
UNDELIVERED = """
SELECT t.id, t.payload::text AS payload, c.value->>'type' AS channel, c.value->>'target' AS target,
       (SELECT count(*) FROM alert_deliveries d
        WHERE d.trigger_id = t.id AND d.channel = c.value->>'type' AND d.target = c.value->>'target') AS attempts
FROM alert_triggers t
JOIN alert_rules r ON r.id = t.rule_id
CROSS JOIN LATERAL jsonb_array_elements(coalesce(r.spec->'channels', '[]'::jsonb)) AS c
WHERE t.fired_at > now() - interval '1 day'
  AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.trigger_id = t.id AND d.ok
                  AND d.channel = c.value->>'type' AND d.target = c.value->>'target')
ORDER BY t.id
"""
HISTORY = """
SELECT t.id, t.idempotency_key, t.observed_at, t.fired_at, t.payload::text AS payload,
       coalesce((SELECT json_agg(json_build_object(
                    'channel', d.channel, 'attempt', d.attempt, 'ok', d.ok, 'status', d.status,
                    'error', d.error, 'attempted_at', d.attempted_at) ORDER BY d.id)
                 FROM alert_deliveries d WHERE d.trigger_id = t.id), '[]')::text AS attempts
FROM alert_triggers t WHERE t.rule_id = $1
ORDER BY t.id DESC LIMIT $2
"""
RULE_EXISTS = "SELECT EXISTS (SELECT 1 FROM alert_rules WHERE id = $1)"
