-- Insights (cold path): rollups of the request log kept by the record writer in
-- the same transaction as the records, the anomaly detector's 5-minute samples,
-- anomalies with their alert outbox, and the detector's lease.
--
-- Rollup keys: absent model / task are stored as '' (keys cannot be NULL);
-- `routed` is 1 when a routing rule rewrote the request. l00..l58 count
-- requests per latency bucket: l00 is [0, 1 ms), lNN (1..57) is
-- [2^((NN-1)/3), 2^(NN/3)) ms, l58 is 2^19 ms (8.7 min) and above; they add
-- up across rows, so any set of rows gives a p95 (see lectr/store/insights.py).

-- One row per org, UTC minute and dimension set; kept 8 days.
CREATE TABLE rollup_minute (
    org_id            TEXT NOT NULL,
    bucket            INTEGER NOT NULL,
    feature           TEXT NOT NULL,
    model_requested   TEXT NOT NULL,
    model_actual      TEXT NOT NULL,
    provider          TEXT NOT NULL,
    task              TEXT NOT NULL,
    routed            INTEGER NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    upstream_errors   INTEGER NOT NULL,
    priced            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    cost_usd          REAL NOT NULL,
    latency_ms_sum    REAL NOT NULL,
    l00 INTEGER NOT NULL DEFAULT 0, l01 INTEGER NOT NULL DEFAULT 0, l02 INTEGER NOT NULL DEFAULT 0, l03 INTEGER NOT NULL DEFAULT 0, l04 INTEGER NOT NULL DEFAULT 0, l05 INTEGER NOT NULL DEFAULT 0, l06 INTEGER NOT NULL DEFAULT 0, l07 INTEGER NOT NULL DEFAULT 0, l08 INTEGER NOT NULL DEFAULT 0, l09 INTEGER NOT NULL DEFAULT 0,
    l10 INTEGER NOT NULL DEFAULT 0, l11 INTEGER NOT NULL DEFAULT 0, l12 INTEGER NOT NULL DEFAULT 0, l13 INTEGER NOT NULL DEFAULT 0, l14 INTEGER NOT NULL DEFAULT 0, l15 INTEGER NOT NULL DEFAULT 0, l16 INTEGER NOT NULL DEFAULT 0, l17 INTEGER NOT NULL DEFAULT 0, l18 INTEGER NOT NULL DEFAULT 0, l19 INTEGER NOT NULL DEFAULT 0,
    l20 INTEGER NOT NULL DEFAULT 0, l21 INTEGER NOT NULL DEFAULT 0, l22 INTEGER NOT NULL DEFAULT 0, l23 INTEGER NOT NULL DEFAULT 0, l24 INTEGER NOT NULL DEFAULT 0, l25 INTEGER NOT NULL DEFAULT 0, l26 INTEGER NOT NULL DEFAULT 0, l27 INTEGER NOT NULL DEFAULT 0, l28 INTEGER NOT NULL DEFAULT 0, l29 INTEGER NOT NULL DEFAULT 0,
    l30 INTEGER NOT NULL DEFAULT 0, l31 INTEGER NOT NULL DEFAULT 0, l32 INTEGER NOT NULL DEFAULT 0, l33 INTEGER NOT NULL DEFAULT 0, l34 INTEGER NOT NULL DEFAULT 0, l35 INTEGER NOT NULL DEFAULT 0, l36 INTEGER NOT NULL DEFAULT 0, l37 INTEGER NOT NULL DEFAULT 0, l38 INTEGER NOT NULL DEFAULT 0, l39 INTEGER NOT NULL DEFAULT 0,
    l40 INTEGER NOT NULL DEFAULT 0, l41 INTEGER NOT NULL DEFAULT 0, l42 INTEGER NOT NULL DEFAULT 0, l43 INTEGER NOT NULL DEFAULT 0, l44 INTEGER NOT NULL DEFAULT 0, l45 INTEGER NOT NULL DEFAULT 0, l46 INTEGER NOT NULL DEFAULT 0, l47 INTEGER NOT NULL DEFAULT 0, l48 INTEGER NOT NULL DEFAULT 0, l49 INTEGER NOT NULL DEFAULT 0,
    l50 INTEGER NOT NULL DEFAULT 0, l51 INTEGER NOT NULL DEFAULT 0, l52 INTEGER NOT NULL DEFAULT 0, l53 INTEGER NOT NULL DEFAULT 0, l54 INTEGER NOT NULL DEFAULT 0, l55 INTEGER NOT NULL DEFAULT 0, l56 INTEGER NOT NULL DEFAULT 0, l57 INTEGER NOT NULL DEFAULT 0, l58 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, bucket, feature, model_requested, model_actual, provider, task, routed)
) WITHOUT ROWID;
CREATE INDEX rollup_minute_bucket ON rollup_minute (bucket);

-- The same per UTC hour; kept as long as the request log.
CREATE TABLE rollup_hour (
    org_id            TEXT NOT NULL,
    bucket            INTEGER NOT NULL,
    feature           TEXT NOT NULL,
    model_requested   TEXT NOT NULL,
    model_actual      TEXT NOT NULL,
    provider          TEXT NOT NULL,
    task              TEXT NOT NULL,
    routed            INTEGER NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    upstream_errors   INTEGER NOT NULL,
    priced            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    cost_usd          REAL NOT NULL,
    latency_ms_sum    REAL NOT NULL,
    l00 INTEGER NOT NULL DEFAULT 0, l01 INTEGER NOT NULL DEFAULT 0, l02 INTEGER NOT NULL DEFAULT 0, l03 INTEGER NOT NULL DEFAULT 0, l04 INTEGER NOT NULL DEFAULT 0, l05 INTEGER NOT NULL DEFAULT 0, l06 INTEGER NOT NULL DEFAULT 0, l07 INTEGER NOT NULL DEFAULT 0, l08 INTEGER NOT NULL DEFAULT 0, l09 INTEGER NOT NULL DEFAULT 0,
    l10 INTEGER NOT NULL DEFAULT 0, l11 INTEGER NOT NULL DEFAULT 0, l12 INTEGER NOT NULL DEFAULT 0, l13 INTEGER NOT NULL DEFAULT 0, l14 INTEGER NOT NULL DEFAULT 0, l15 INTEGER NOT NULL DEFAULT 0, l16 INTEGER NOT NULL DEFAULT 0, l17 INTEGER NOT NULL DEFAULT 0, l18 INTEGER NOT NULL DEFAULT 0, l19 INTEGER NOT NULL DEFAULT 0,
    l20 INTEGER NOT NULL DEFAULT 0, l21 INTEGER NOT NULL DEFAULT 0, l22 INTEGER NOT NULL DEFAULT 0, l23 INTEGER NOT NULL DEFAULT 0, l24 INTEGER NOT NULL DEFAULT 0, l25 INTEGER NOT NULL DEFAULT 0, l26 INTEGER NOT NULL DEFAULT 0, l27 INTEGER NOT NULL DEFAULT 0, l28 INTEGER NOT NULL DEFAULT 0, l29 INTEGER NOT NULL DEFAULT 0,
    l30 INTEGER NOT NULL DEFAULT 0, l31 INTEGER NOT NULL DEFAULT 0, l32 INTEGER NOT NULL DEFAULT 0, l33 INTEGER NOT NULL DEFAULT 0, l34 INTEGER NOT NULL DEFAULT 0, l35 INTEGER NOT NULL DEFAULT 0, l36 INTEGER NOT NULL DEFAULT 0, l37 INTEGER NOT NULL DEFAULT 0, l38 INTEGER NOT NULL DEFAULT 0, l39 INTEGER NOT NULL DEFAULT 0,
    l40 INTEGER NOT NULL DEFAULT 0, l41 INTEGER NOT NULL DEFAULT 0, l42 INTEGER NOT NULL DEFAULT 0, l43 INTEGER NOT NULL DEFAULT 0, l44 INTEGER NOT NULL DEFAULT 0, l45 INTEGER NOT NULL DEFAULT 0, l46 INTEGER NOT NULL DEFAULT 0, l47 INTEGER NOT NULL DEFAULT 0, l48 INTEGER NOT NULL DEFAULT 0, l49 INTEGER NOT NULL DEFAULT 0,
    l50 INTEGER NOT NULL DEFAULT 0, l51 INTEGER NOT NULL DEFAULT 0, l52 INTEGER NOT NULL DEFAULT 0, l53 INTEGER NOT NULL DEFAULT 0, l54 INTEGER NOT NULL DEFAULT 0, l55 INTEGER NOT NULL DEFAULT 0, l56 INTEGER NOT NULL DEFAULT 0, l57 INTEGER NOT NULL DEFAULT 0, l58 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, bucket, feature, model_requested, model_actual, provider, task, routed)
) WITHOUT ROWID;
CREATE INDEX rollup_hour_bucket ON rollup_hour (bucket);

-- The same per UTC day; kept as long as the request log.
CREATE TABLE rollup_day (
    org_id            TEXT NOT NULL,
    bucket            INTEGER NOT NULL,
    feature           TEXT NOT NULL,
    model_requested   TEXT NOT NULL,
    model_actual      TEXT NOT NULL,
    provider          TEXT NOT NULL,
    task              TEXT NOT NULL,
    routed            INTEGER NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    upstream_errors   INTEGER NOT NULL,
    priced            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    cost_usd          REAL NOT NULL,
    latency_ms_sum    REAL NOT NULL,
    l00 INTEGER NOT NULL DEFAULT 0, l01 INTEGER NOT NULL DEFAULT 0, l02 INTEGER NOT NULL DEFAULT 0, l03 INTEGER NOT NULL DEFAULT 0, l04 INTEGER NOT NULL DEFAULT 0, l05 INTEGER NOT NULL DEFAULT 0, l06 INTEGER NOT NULL DEFAULT 0, l07 INTEGER NOT NULL DEFAULT 0, l08 INTEGER NOT NULL DEFAULT 0, l09 INTEGER NOT NULL DEFAULT 0,
    l10 INTEGER NOT NULL DEFAULT 0, l11 INTEGER NOT NULL DEFAULT 0, l12 INTEGER NOT NULL DEFAULT 0, l13 INTEGER NOT NULL DEFAULT 0, l14 INTEGER NOT NULL DEFAULT 0, l15 INTEGER NOT NULL DEFAULT 0, l16 INTEGER NOT NULL DEFAULT 0, l17 INTEGER NOT NULL DEFAULT 0, l18 INTEGER NOT NULL DEFAULT 0, l19 INTEGER NOT NULL DEFAULT 0,
    l20 INTEGER NOT NULL DEFAULT 0, l21 INTEGER NOT NULL DEFAULT 0, l22 INTEGER NOT NULL DEFAULT 0, l23 INTEGER NOT NULL DEFAULT 0, l24 INTEGER NOT NULL DEFAULT 0, l25 INTEGER NOT NULL DEFAULT 0, l26 INTEGER NOT NULL DEFAULT 0, l27 INTEGER NOT NULL DEFAULT 0, l28 INTEGER NOT NULL DEFAULT 0, l29 INTEGER NOT NULL DEFAULT 0,
    l30 INTEGER NOT NULL DEFAULT 0, l31 INTEGER NOT NULL DEFAULT 0, l32 INTEGER NOT NULL DEFAULT 0, l33 INTEGER NOT NULL DEFAULT 0, l34 INTEGER NOT NULL DEFAULT 0, l35 INTEGER NOT NULL DEFAULT 0, l36 INTEGER NOT NULL DEFAULT 0, l37 INTEGER NOT NULL DEFAULT 0, l38 INTEGER NOT NULL DEFAULT 0, l39 INTEGER NOT NULL DEFAULT 0,
    l40 INTEGER NOT NULL DEFAULT 0, l41 INTEGER NOT NULL DEFAULT 0, l42 INTEGER NOT NULL DEFAULT 0, l43 INTEGER NOT NULL DEFAULT 0, l44 INTEGER NOT NULL DEFAULT 0, l45 INTEGER NOT NULL DEFAULT 0, l46 INTEGER NOT NULL DEFAULT 0, l47 INTEGER NOT NULL DEFAULT 0, l48 INTEGER NOT NULL DEFAULT 0, l49 INTEGER NOT NULL DEFAULT 0,
    l50 INTEGER NOT NULL DEFAULT 0, l51 INTEGER NOT NULL DEFAULT 0, l52 INTEGER NOT NULL DEFAULT 0, l53 INTEGER NOT NULL DEFAULT 0, l54 INTEGER NOT NULL DEFAULT 0, l55 INTEGER NOT NULL DEFAULT 0, l56 INTEGER NOT NULL DEFAULT 0, l57 INTEGER NOT NULL DEFAULT 0, l58 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, bucket, feature, model_requested, model_actual, provider, task, routed)
) WITHOUT ROWID;
CREATE INDEX rollup_day_bucket ON rollup_day (bucket);

-- Per org and feature ('' = the whole org), per 5-minute window with traffic:
-- the detector's samples. Windows without a row had no traffic.
CREATE TABLE insight_windows (
    org_id       TEXT NOT NULL,
    feature      TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    requests     INTEGER NOT NULL,
    errors       INTEGER NOT NULL,
    cost_usd     REAL NOT NULL,
    drifted      INTEGER NOT NULL,
    p95_ms       REAL,
    PRIMARY KEY (org_id, feature, window_start)
) WITHOUT ROWID;
CREATE INDEX insight_windows_start ON insight_windows (window_start);

-- One row per anomaly. The id is derived from (org, feature, type, first
-- window), so instances evaluating the same window cannot raise it twice;
-- `ongoing` is true while the deviation lasts (dismissed or not), and at most
-- one ongoing anomaly exists per org, feature and type.
CREATE TABLE anomalies (
    id             TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL,
    feature        TEXT NOT NULL,
    type           TEXT NOT NULL,
    metric         TEXT NOT NULL,
    baseline       REAL NOT NULL,
    sigma          REAL NOT NULL,
    observed       REAL NOT NULL,
    deviation      REAL NOT NULL,
    severity       TEXT NOT NULL,
    window_start   INTEGER NOT NULL,
    window_end     INTEGER NOT NULL,
    detected_at    REAL NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'resolved', 'dismissed')),
    ongoing        INTEGER NOT NULL,
    resolved_at    REAL,
    dismissed_at   REAL,
    -- The alert outbox: pending until a webhook delivery succeeds (or gives up).
    alert_state    TEXT NOT NULL CHECK (alert_state IN ('none', 'pending', 'sent', 'failed')),
    alert_attempts INTEGER NOT NULL DEFAULT 0,
    alert_next     REAL,
    alerted_at     REAL
);
CREATE UNIQUE INDEX anomalies_ongoing ON anomalies (org_id, feature, type) WHERE ongoing;
CREATE INDEX anomalies_org ON anomalies (org_id, detected_at);
CREATE INDEX anomalies_alerts ON anomalies (alert_state, alert_next);

-- The detector's lease (one leader among instances and workers) and the last
-- window it evaluated.
CREATE TABLE insights_state (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL,
    last_window INTEGER
);
INSERT INTO insights_state (name, holder, expires_at, last_window) VALUES ('detector', '', 0, NULL);
