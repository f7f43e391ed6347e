-- Spend limits, rate limits and latency targets, per org (scope '*') or per feature.
CREATE TABLE budgets (
    org_id         text NOT NULL REFERENCES orgs(id),
    scope          text NOT NULL,
    period         text NOT NULL CHECK (period IN ('day', 'month')),
    soft_usd       double precision,
    hard_usd       double precision,
    action         text NOT NULL CHECK (action IN ('reject', 'fallback')),
    fallback_model text,
    created_at     double precision NOT NULL,
    PRIMARY KEY (org_id, scope, period)
);

CREATE TABLE rate_limits (
    org_id             text NOT NULL REFERENCES orgs(id),
    scope              text NOT NULL,
    requests_per_min   integer,
    tokens_per_min     integer,
    concurrent_streams integer,
    created_at         double precision NOT NULL,
    PRIMARY KEY (org_id, scope)
);

CREATE TABLE latency_targets (
    org_id     text NOT NULL REFERENCES orgs(id),
    scope      text NOT NULL,
    p95_ms     double precision NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (org_id, scope)
);
