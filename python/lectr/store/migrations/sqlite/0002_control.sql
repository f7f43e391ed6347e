-- Routing rules and fallback chains, per org.
CREATE TABLE routing_rules (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs(id),
    name            TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1,
    match_feature   TEXT,
    match_task      TEXT,
    match_provider  TEXT,
    match_model     TEXT,
    target_provider TEXT,
    target_model    TEXT,
    split_percent   INTEGER NOT NULL DEFAULT 100,
    created_at      REAL NOT NULL,
    UNIQUE (org_id, name)
);

-- scope is a feature tag, or '*' for the org's default chain.
CREATE TABLE fallback_chains (
    org_id     TEXT NOT NULL REFERENCES orgs(id),
    scope      TEXT NOT NULL,
    targets    TEXT NOT NULL,
    on_status  TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (org_id, scope)
);
