-- Monthly statements are kept, never edited: re-rating a month after a tariff correction adds
-- version n+1 beside version n (the invoice already sent stays what it was).
CREATE TABLE statements (
    group_id    TEXT NOT NULL,
    month       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    total_fen   BIGINT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (group_id, month, version)
);
