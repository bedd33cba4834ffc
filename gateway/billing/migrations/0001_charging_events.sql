-- Every charging event, once: the event id is the primary key, so a re-delivery (a replay after
-- a Redis outage, a consumer killed between commit and XACK) is absorbed by
-- INSERT ... ON CONFLICT (event_id) DO NOTHING. Times are the events' own UTC strings
-- (2026-12-01T08:00:00.000Z): fixed width, so text order is time order in SQLite and PostgreSQL.
CREATE TABLE charging_events (
    event_id          TEXT PRIMARY KEY,
    event_type        TEXT NOT NULL,
    call_id           TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    node_id           TEXT NOT NULL,
    event_time        TEXT NOT NULL,
    group_id          TEXT,
    payer_role        TEXT,
    payer_number      TEXT,
    payer_group       TEXT,
    direction         TEXT NOT NULL,
    call_class        TEXT NOT NULL,
    calling_number    TEXT NOT NULL,
    called_number     TEXT NOT NULL,
    off_net_group     INTEGER NOT NULL,
    answer_time       TEXT,
    end_time          TEXT,
    duration_ms       BIGINT NOT NULL,
    billable_seconds  BIGINT NOT NULL,
    tariff_id         TEXT NOT NULL,
    units             BIGINT NOT NULL,
    amount_fen        BIGINT NOT NULL,
    raw               TEXT NOT NULL
);

-- The statement reads one group's answered calls (stop events) of one month: the index holds
-- every column it totals, so the rows (with their raw JSON) are not read (an index-only scan in
-- PostgreSQL once vacuumed, a covering index in SQLite).
CREATE INDEX charging_events_payer_month
    ON charging_events (payer_group, answer_time, call_class, payer_role, off_net_group, duration_ms,
                        called_number)
    WHERE event_type = 'stop';
