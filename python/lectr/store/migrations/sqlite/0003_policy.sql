-- Spend limits, rate limits and latency targets, per org (scope '*') or per feature.
CREATE TABLE budgets (
    org_id         TEXT NOT NULL REFERENCES orgs(id),
    scope          TEXT NOT NULL,
    period         TEXT NOT NULL CHECK (period IN ('day', 'month')),
    soft_usd       REAL,
    hard_usd       REAL,
    action         TEXT NOT NULL CHECK (action IN ('reject', 'fallback')),
    fallback_model TEXT,
    created_at     REAL NOT NULL,
    PRIMARY KEY (org_id, scope, period)
);

CREATE TABLE rate_limits (
    org_id             TEXT NOT NULL REFERENCES orgs(id),
    scope              TEXT NOT NULL,
    requests_per_min   INTEGER,
    tokens_per_min     INTEGER,
    concurrent_streams INTEGER,
    created_at         REAL NOT NULL,
    PRIMARY KEY (org_id, scope)
);

CREATE TABLE latency_targets (
    org_id     TEXT NOT NULL REFERENCES orgs(id),
    scope      TEXT NOT NULL,
    p95_ms     REAL NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (org_id, scope)
);
