-- Orgs, their keys (hashes only), the request log and the control version.
CREATE TABLE orgs (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    disabled          INTEGER NOT NULL DEFAULT 0,
    azure_endpoint    TEXT,
    azure_api_version TEXT,
    created_at        REAL NOT NULL
);

CREATE TABLE org_keys (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs(id),
    prefix     TEXT NOT NULL UNIQUE,
    key_hash   BLOB NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX org_keys_org ON org_keys(org_id);

CREATE TABLE requests (
    id                TEXT PRIMARY KEY,
    ts                REAL NOT NULL,
    org_id            TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    provider          TEXT NOT NULL,
    provider_unknown  INTEGER NOT NULL,
    model_requested   TEXT,
    model_actual      TEXT,
    rule_id           TEXT,
    fallback_used     TEXT,
    status_code       INTEGER NOT NULL,
    error_category    TEXT,
    error_source      TEXT,
    streaming         INTEGER NOT NULL,
    latency_ms        REAL NOT NULL,
    ttfb_ms           REAL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    cached_tokens     INTEGER,
    token_source      TEXT,
    cost_usd          REAL,
    feature           TEXT NOT NULL,
    task              TEXT
) WITHOUT ROWID;
CREATE INDEX requests_org_ts ON requests(org_id, ts DESC);
CREATE INDEX requests_org_feature_ts ON requests(org_id, feature, ts DESC);

-- Bumped by every control-plane change; instances poll it to reload.
CREATE TABLE control_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO control_version (id, version) VALUES (1, 1);
