-- The outbox of subscription changes, SQLite flavour.
--
-- The target application INSERTs one row per change with status 'pending'; the Airflow DAG
-- connect_subscription_changes claims pending rows (claim_token/claimed_at, never a status of its
-- own), creates the Connect request and writes back connect_request_id, status, error and attempts.
-- Timestamps are UTC text in one fixed format (YYYY-MM-DDTHH:MM:SS.sssZ) so they compare as text.
-- Safe to run again: every statement is IF NOT EXISTS.

CREATE TABLE IF NOT EXISTS connect_subscription_changes (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    change_type         TEXT    NOT NULL
                        CHECK (change_type IN ('purchase', 'change', 'suspend', 'resume', 'cancel')),
    asset_external_id   TEXT,
    asset_external_uid  TEXT,
    payload             TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    status              TEXT    NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'submitted', 'approved', 'failed', 'inquiring', 'rejected')),
    connect_request_id  TEXT,
    error               TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    claim_token         TEXT,
    claimed_at          TEXT,
    created_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at          TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Claiming scans pending rows in id order; following scans submitted and inquiring rows.
CREATE INDEX IF NOT EXISTS ix_connect_subscription_changes_open
    ON connect_subscription_changes (status, id)
    WHERE status IN ('pending', 'submitted', 'inquiring');

CREATE INDEX IF NOT EXISTS ix_connect_subscription_changes_claim_token
    ON connect_subscription_changes (claim_token)
    WHERE claim_token IS NOT NULL;

CREATE INDEX IF NOT EXISTS ix_connect_subscription_changes_request
    ON connect_subscription_changes (connect_request_id)
    WHERE connect_request_id IS NOT NULL;

CREATE INDEX IF NOT EXISTS ix_connect_subscription_changes_asset
    ON connect_subscription_changes (asset_external_id);
