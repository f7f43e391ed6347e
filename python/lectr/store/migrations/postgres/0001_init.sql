-- Orgs, their keys (hashes only), the request log and the control version.
CREATE TABLE orgs (
    id                text PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    disabled          boolean NOT NULL DEFAULT false,
    azure_endpoint    text,
    azure_api_version text,
    created_at        double precision NOT NULL
);

CREATE TABLE org_keys (
    id         text PRIMARY KEY,
    org_id     text NOT NULL REFERENCES orgs(id),
    prefix     text NOT NULL UNIQUE,
    key_hash   bytea NOT NULL UNIQUE,
    created_at double precision NOT NULL,
    revoked_at double precision
);
CREATE INDEX org_keys_org ON org_keys (org_id);

-- Partitioned by day on ts; partitions are created ahead by the gateway and
-- dropped by retention. The default partition catches anything outside them,
-- so no record is ever refused for lack of a partition.
CREATE TABLE requests (
    id                text NOT NULL,
    ts                timestamptz NOT NULL,
    org_id            text NOT NULL,
    endpoint          text NOT NULL,
    provider          text NOT NULL,
    provider_unknown  boolean NOT NULL,
    model_requested   text,
    model_actual      text,
    rule_id           text,
    fallback_used     text,
    status_code       smallint NOT NULL,
    error_category    text,
    error_source      text,
    streaming         boolean NOT NULL,
    latency_ms        double precision NOT NULL,
    ttfb_ms           double precision,
    prompt_tokens     integer,
    completion_tokens integer,
    cached_tokens     integer,
    token_source      text,
    cost_usd          double precision,
    feature           text NOT NULL,
    task              text,
    PRIMARY KEY (ts, id)
) PARTITION BY RANGE (ts);
CREATE TABLE requests_default PARTITION OF requests DEFAULT;
-- The log's filters are always per org and time-ordered; feature is the one
-- filter selective enough to deserve its own index.
CREATE INDEX requests_org_ts ON requests (org_id, ts DESC);
CREATE INDEX requests_org_feature_ts ON requests (org_id, feature, ts DESC);

CREATE TABLE control_version (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO control_version (id, version) VALUES (1, 1);
