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
    org_id            text NOT NULL,
    bucket            bigint NOT NULL,
    feature           text NOT NULL,
    model_requested   text NOT NULL,
    model_actual      text NOT NULL,
    provider          text NOT NULL,
    task              text NOT NULL,
    routed            smallint NOT NULL,
    requests          bigint NOT NULL,
    errors            bigint NOT NULL,
    upstream_errors   bigint NOT NULL,
    priced            bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cached_tokens     bigint NOT NULL,
    cost_usd          double precision NOT NULL,
    latency_ms_sum    double precision NOT NULL,
    l00 bigint NOT NULL DEFAULT 0, l01 bigint NOT NULL DEFAULT 0, l02 bigint NOT NULL DEFAULT 0, l03 bigint NOT NULL DEFAULT 0, l04 bigint NOT NULL DEFAULT 0, l05 bigint NOT NULL DEFAULT 0, l06 bigint NOT NULL DEFAULT 0, l07 bigint NOT NULL DEFAULT 0, l08 bigint NOT NULL DEFAULT 0, l09 bigint NOT NULL DEFAULT 0,
    l10 bigint NOT NULL DEFAULT 0, l11 bigint NOT NULL DEFAULT 0, l12 bigint NOT NULL DEFAULT 0, l13 bigint NOT NULL DEFAULT 0, l14 bigint NOT NULL DEFAULT 0, l15 bigint NOT NULL DEFAULT 0, l16 bigint NOT NULL DEFAULT 0, l17 bigint NOT NULL DEFAULT 0, l18 bigint NOT NULL DEFAULT 0, l19 bigint NOT NULL DEFAULT 0,
    l20 bigint NOT NULL DEFAULT 0, l21 bigint NOT NULL DEFAULT 0, l22 bigint NOT NULL DEFAULT 0, l23 bigint NOT NULL DEFAULT 0, l24 bigint NOT NULL DEFAULT 0, l25 bigint NOT NULL DEFAULT 0, l26 bigint NOT NULL DEFAULT 0, l27 bigint NOT NULL DEFAULT 0, l28 bigint NOT NULL DEFAULT 0, l29 bigint NOT NULL DEFAULT 0,
    l30 bigint NOT NULL DEFAULT 0, l31 bigint NOT NULL DEFAULT 0, l32 bigint NOT NULL DEFAULT 0, l33 bigint NOT NULL DEFAULT 0, l34 bigint NOT NULL DEFAULT 0, l35 bigint NOT NULL DEFAULT 0, l36 bigint NOT NULL DEFAULT 0, l37 bigint NOT NULL DEFAULT 0, l38 bigint NOT NULL DEFAULT 0, l39 bigint NOT NULL DEFAULT 0,
    l40 bigint NOT NULL DEFAULT 0, l41 bigint NOT NULL DEFAULT 0, l42 bigint NOT NULL DEFAULT 0, l43 bigint NOT NULL DEFAULT 0, l44 bigint NOT NULL DEFAULT 0, l45 bigint NOT NULL DEFAULT 0, l46 bigint NOT NULL DEFAULT 0, l47 bigint NOT NULL DEFAULT 0, l48 bigint NOT NULL DEFAULT 0, l49 bigint NOT NULL DEFAULT 0,
    l50 bigint NOT NULL DEFAULT 0, l51 bigint NOT NULL DEFAULT 0, l52 bigint NOT NULL DEFAULT 0, l53 bigint NOT NULL DEFAULT 0, l54 bigint NOT NULL DEFAULT 0, l55 bigint NOT NULL DEFAULT 0, l56 bigint NOT NULL DEFAULT 0, l57 bigint NOT NULL DEFAULT 0, l58 bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, bucket, feature, model_requested, model_actual, provider, task, routed)
);
CREATE INDEX rollup_minute_bucket ON rollup_minute (bucket);

-- The same per UTC hour; kept as long as the request log.
CREATE TABLE rollup_hour (
    org_id            text NOT NULL,
    bucket            bigint NOT NULL,
    feature           text NOT NULL,
    model_requested   text NOT NULL,
    model_actual      text NOT NULL,
    provider          text NOT NULL,
    task              text NOT NULL,
    routed            smallint NOT NULL,
    requests          bigint NOT NULL,
    errors            bigint NOT NULL,
    upstream_errors   bigint NOT NULL,
    priced            bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cached_tokens     bigint NOT NULL,
    cost_usd          double precision NOT NULL,
    latency_ms_sum    double precision NOT NULL,
    l00 bigint NOT NULL DEFAULT 0, l01 bigint NOT NULL DEFAULT 0, l02 bigint NOT NULL DEFAULT 0, l03 bigint NOT NULL DEFAULT 0, l04 bigint NOT NULL DEFAULT 0, l05 bigint NOT NULL DEFAULT 0, l06 bigint NOT NULL DEFAULT 0, l07 bigint NOT NULL DEFAULT 0, l08 bigint NOT NULL DEFAULT 0, l09 bigint NOT NULL DEFAULT 0,
    l10 bigint NOT NULL DEFAULT 0, l11 bigint NOT NULL DEFAULT 0, l12 bigint NOT NULL DEFAULT 0, l13 bigint NOT NULL DEFAULT 0, l14 bigint NOT NULL DEFAULT 0, l15 bigint NOT NULL DEFAULT 0, l16 bigint NOT NULL DEFAULT 0, l17 bigint NOT NULL DEFAULT 0, l18 bigint NOT NULL DEFAULT 0, l19 bigint NOT NULL DEFAULT 0,
    l20 bigint NOT NULL DEFAULT 0, l21 bigint NOT NULL DEFAULT 0, l22 bigint NOT NULL DEFAULT 0, l23 bigint NOT NULL DEFAULT 0, l24 bigint NOT NULL DEFAULT 0, l25 bigint NOT NULL DEFAULT 0, l26 bigint NOT NULL DEFAULT 0, l27 bigint NOT NULL DEFAULT 0, l28 bigint NOT NULL DEFAULT 0, l29 bigint NOT NULL DEFAULT 0,
    l30 bigint NOT NULL DEFAULT 0, l31 bigint NOT NULL DEFAULT 0, l32 bigint NOT NULL DEFAULT 0, l33 bigint NOT NULL DEFAULT 0, l34 bigint NOT NULL DEFAULT 0, l35 bigint NOT NULL DEFAULT 0, l36 bigint NOT NULL DEFAULT 0, l37 bigint NOT NULL DEFAULT 0, l38 bigint NOT NULL DEFAULT 0, l39 bigint NOT NULL DEFAULT 0,
    l40 bigint NOT NULL DEFAULT 0, l41 bigint NOT NULL DEFAULT 0, l42 bigint NOT NULL DEFAULT 0, l43 bigint NOT NULL DEFAULT 0, l44 bigint NOT NULL DEFAULT 0, l45 bigint NOT NULL DEFAULT 0, l46 bigint NOT NULL DEFAULT 0, l47 bigint NOT NULL DEFAULT 0, l48 bigint NOT NULL DEFAULT 0, l49 bigint NOT NULL DEFAULT 0,
    l50 bigint NOT NULL DEFAULT 0, l51 bigint NOT NULL DEFAULT 0, l52 bigint NOT NULL DEFAULT 0, l53 bigint NOT NULL DEFAULT 0, l54 bigint NOT NULL DEFAULT 0, l55 bigint NOT NULL DEFAULT 0, l56 bigint NOT NULL DEFAULT 0, l57 bigint NOT NULL DEFAULT 0, l58 bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, bucket, feature, model_requested, model_actual, provider, task, routed)
);
CREATE INDEX rollup_hour_bucket ON rollup_hour (bucket);

-- The same per UTC day; kept as long as the request log.
CREATE TABLE rollup_day (
    org_id            text NOT NULL,
    bucket            bigint NOT NULL,
    feature           text NOT NULL,
    model_requested   text NOT NULL,
    model_actual      text NOT NULL,
    provider          text NOT NULL,
    task              text NOT NULL,
    routed            smallint NOT NULL,
    requests          bigint NOT NULL,
    errors            bigint NOT NULL,
    upstream_errors   bigint NOT NULL,
    priced            bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cached_tokens     bigint NOT NULL,
    cost_usd          double precision NOT NULL,
    latency_ms_sum    double precision NOT NULL,
    l00 bigint NOT NULL DEFAULT 0, l01 bigint NOT NULL DEFAULT 0, l02 bigint NOT NULL DEFAULT 0, l03 bigint NOT NULL DEFAULT 0, l04 bigint NOT NULL DEFAULT 0, l05 bigint NOT NULL DEFAULT 0, l06 bigint NOT NULL DEFAULT 0, l07 bigint NOT NULL DEFAULT 0, l08 bigint NOT NULL DEFAULT 0, l09 bigint NOT NULL DEFAULT 0,
    l10 bigint NOT NULL DEFAULT 0, l11 bigint NOT NULL DEFAULT 0, l12 bigint NOT NULL DEFAULT 0, l13 bigint NOT NULL DEFAULT 0, l14 bigint NOT NULL DEFAULT 0, l15 bigint NOT NULL DEFAULT 0, l16 bigint NOT NULL DEFAULT 0, l17 bigint NOT NULL DEFAULT 0, l18 bigint NOT NULL DEFAULT 0, l19 bigint NOT NULL DEFAULT 0,
    l20 bigint NOT NULL DEFAULT 0, l21 bigint NOT NULL DEFAULT 0, l22 bigint NOT NULL DEFAULT 0, l23 bigint NOT NULL DEFAULT 0, l24 bigint NOT NULL DEFAULT 0, l25 bigint NOT NULL DEFAULT 0, l26 bigint NOT NULL DEFAULT 0, l27 bigint NOT NULL DEFAULT 0, l28 bigint NOT NULL DEFAULT 0, l29 bigint NOT NULL DEFAULT 0,
    l30 bigint NOT NULL DEFAULT 0, l31 bigint NOT NULL DEFAULT 0, l32 bigint NOT NULL DEFAULT 0, l33 bigint NOT NULL DEFAULT 0, l34 bigint NOT NULL DEFAULT 0, l35 bigint NOT NULL DEFAULT 0, l36 bigint NOT NULL DEFAULT 0, l37 bigint NOT NULL DEFAULT 0, l38 bigint NOT NULL DEFAULT 0, l39 bigint NOT NULL DEFAULT 0,
    l40 bigint NOT NULL DEFAULT 0, l41 bigint NOT NULL DEFAULT 0, l42 bigint NOT NULL DEFAULT 0, l43 bigint NOT NULL DEFAULT 0, l44 bigint NOT NULL DEFAULT 0, l45 bigint NOT NULL DEFAULT 0, l46 bigint NOT NULL DEFAULT 0, l47 bigint NOT NULL DEFAULT 0, l48 bigint NOT NULL DEFAULT 0, l49 bigint NOT NULL DEFAULT 0,
    l50 bigint NOT NULL DEFAULT 0, l51 bigint NOT NULL DEFAULT 0, l52 bigint NOT NULL DEFAULT 0, l53 bigint NOT NULL DEFAULT 0, l54 bigint NOT NULL DEFAULT 0, l55 bigint NOT NULL DEFAULT 0, l56 bigint NOT NULL DEFAULT 0, l57 bigint NOT NULL DEFAULT 0, l58 bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, bucket, feature, model_requested, model_actual, provider, task, routed)
);
CREATE INDEX rollup_day_bucket ON rollup_day (bucket);

-- Per org and feature ('' = the whole org), per 5-minute window with traffic:
-- the detector's samples. Windows without a row had no traffic.
CREATE TABLE insight_windows (
    org_id       text NOT NULL,
    feature      text NOT NULL,
    window_start bigint NOT NULL,
    requests     bigint NOT NULL,
    errors       bigint NOT NULL,
    cost_usd     double precision NOT NULL,
    drifted      bigint NOT NULL,
    p95_ms       double precision,
    PRIMARY KEY (org_id, feature, window_start)
);
CREATE INDEX insight_windows_start ON insight_windows (window_start);

-- One row per anomaly. The id is derived from (org, feature, type, first
-- window), so instances evaluating the same window cannot raise it twice;
-- `ongoing` is true while the deviation lasts (dismissed or not), and at most
-- one ongoing anomaly exists per org, feature and type.
CREATE TABLE anomalies (
    id             text PRIMARY KEY,
    org_id         text NOT NULL,
    feature        text NOT NULL,
    type           text NOT NULL,
    metric         text NOT NULL,
    baseline       double precision NOT NULL,
    sigma          double precision NOT NULL,
    observed       double precision NOT NULL,
    deviation      double precision NOT NULL,
    severity       text NOT NULL,
    window_start   bigint NOT NULL,
    window_end     bigint NOT NULL,
    detected_at    double precision NOT NULL,
    state          text NOT NULL CHECK (state IN ('active', 'resolved', 'dismissed')),
    ongoing        boolean NOT NULL,
    resolved_at    double precision,
    dismissed_at   double precision,
    -- The alert outbox: pending until a webhook delivery succeeds (or gives up).
    alert_state    text NOT NULL CHECK (alert_state IN ('none', 'pending', 'sent', 'failed')),
    alert_attempts integer NOT NULL DEFAULT 0,
    alert_next     double precision,
    alerted_at     double precision
);
CREATE UNIQUE INDEX anomalies_ongoing ON anomalies (org_id, feature, type) WHERE ongoing;
CREATE INDEX anomalies_org ON anomalies (org_id, detected_at);
CREATE INDEX anomalies_alerts ON anomalies (alert_state, alert_next);

-- The detector's lease (one leader among instances and workers) and the last
-- window it evaluated.
CREATE TABLE insights_state (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at double precision NOT NULL,
    last_window bigint
);
INSERT INTO insights_state (name, holder, expires_at, last_window) VALUES ('detector', '', 0, NULL);
