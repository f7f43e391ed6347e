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

-- Records stored before this migration are rolled up here, once; later ones
-- are rolled up by the writer in the transaction that stores them. Latency
-- buckets: the same edges as lectr.store.insights.EDGES.
INSERT INTO rollup_minute (org_id, bucket, feature, model_requested, model_actual, provider, task, routed, requests, errors, upstream_errors, priced, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms_sum, l00, l01, l02, l03, l04, l05, l06, l07, l08, l09, l10, l11, l12, l13, l14, l15, l16, l17, l18, l19, l20, l21, l22, l23, l24, l25, l26, l27, l28, l29, l30, l31, l32, l33, l34, l35, l36, l37, l38, l39, l40, l41, l42, l43, l44, l45, l46, l47, l48, l49, l50, l51, l52, l53, l54, l55, l56, l57, l58)
SELECT org_id, m, feature, mr, ma, provider, task, routed, count(*), sum(err), sum(up), sum(priced), sum(pt), sum(ct), sum(cc),
    coalesce(sum(cost_usd), 0), sum(latency_ms),
    sum(CASE WHEN b = 0 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 1 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 2 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 3 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 4 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 5 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 6 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 7 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 8 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 9 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 10 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 11 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 12 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 13 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 14 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 15 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 16 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 17 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 18 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 19 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 20 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 21 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 22 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 23 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 24 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 25 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 26 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 27 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 28 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 29 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 30 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 31 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 32 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 33 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 34 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 35 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 36 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 37 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 38 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 39 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 40 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 41 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 42 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 43 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 44 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 45 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 46 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 47 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 48 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 49 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 50 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 51 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 52 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 53 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 54 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 55 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 56 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 57 THEN 1 ELSE 0 END),
    sum(CASE WHEN b = 58 THEN 1 ELSE 0 END)
FROM (
    SELECT org_id, CAST(ts / 60 AS INTEGER) * 60 AS m, feature, coalesce(model_requested, '') AS mr,
        coalesce(model_actual, '') AS ma, provider, coalesce(task, '') AS task,
        CASE WHEN rule_id IS NOT NULL AND rule_id NOT LIKE '%:%' THEN 1 ELSE 0 END AS routed,
        CASE WHEN status_code >= 400 OR error_category IS NOT NULL THEN 1 ELSE 0 END AS err,
        CASE WHEN error_source IN ('provider', 'network') THEN 1 ELSE 0 END AS up,
        CASE WHEN cost_usd IS NULL THEN 0 ELSE 1 END AS priced,
        coalesce(prompt_tokens, 0) AS pt, coalesce(completion_tokens, 0) AS ct,
        CASE WHEN coalesce(cached_tokens, 0) < coalesce(prompt_tokens, 0)
            THEN coalesce(cached_tokens, 0) ELSE coalesce(prompt_tokens, 0) END AS cc,
        cost_usd, latency_ms,
        CASE WHEN latency_ms < 1.0 THEN 0 WHEN latency_ms < 1.2599210498948732 THEN 1 WHEN latency_ms < 1.5874010519681994 THEN 2 WHEN latency_ms < 2.0 THEN 3 WHEN latency_ms < 2.5198420997897464 THEN 4 WHEN latency_ms < 3.174802103936399 THEN 5 WHEN latency_ms < 4.0 THEN 6 WHEN latency_ms < 5.039684199579493 THEN 7 WHEN latency_ms < 6.3496042078727974 THEN 8 WHEN latency_ms < 8.0 THEN 9 WHEN latency_ms < 10.079368399158986 THEN 10 WHEN latency_ms < 12.699208415745595 THEN 11 WHEN latency_ms < 16.0 THEN 12 WHEN latency_ms < 20.158736798317967 THEN 13 WHEN latency_ms < 25.398416831491197 THEN 14 WHEN latency_ms < 32.0 THEN 15 WHEN latency_ms < 40.317473596635935 THEN 16 WHEN latency_ms < 50.796833662982394 THEN 17 WHEN latency_ms < 64.0 THEN 18 WHEN latency_ms < 80.63494719327187 THEN 19 WHEN latency_ms < 101.59366732596479 THEN 20 WHEN latency_ms < 128.0 THEN 21 WHEN latency_ms < 161.26989438654374 THEN 22 WHEN latency_ms < 203.18733465192958 THEN 23 WHEN latency_ms < 256.0 THEN 24 WHEN latency_ms < 322.53978877308765 THEN 25 WHEN latency_ms < 406.3746693038589 THEN 26 WHEN latency_ms < 512.0 THEN 27 WHEN latency_ms < 645.0795775461753 THEN 28 WHEN latency_ms < 812.7493386077178 THEN 29 WHEN latency_ms < 1024.0 THEN 30 WHEN latency_ms < 1290.1591550923506 THEN 31 WHEN latency_ms < 1625.4986772154357 THEN 32 WHEN latency_ms < 2048.0 THEN 33 WHEN latency_ms < 2580.318310184701 THEN 34 WHEN latency_ms < 3250.9973544308714 THEN 35 WHEN latency_ms < 4096.0 THEN 36 WHEN latency_ms < 5160.636620369402 THEN 37 WHEN latency_ms < 6501.994708861743 THEN 38 WHEN latency_ms < 8192.0 THEN 39 WHEN latency_ms < 10321.273240738805 THEN 40 WHEN latency_ms < 13003.989417723486 THEN 41 WHEN latency_ms < 16384.0 THEN 42 WHEN latency_ms < 20642.54648147761 THEN 43 WHEN latency_ms < 26007.97883544697 THEN 44 WHEN latency_ms < 32768.0 THEN 45 WHEN latency_ms < 41285.09296295522 THEN 46 WHEN latency_ms < 52015.95767089394 THEN 47 WHEN latency_ms < 65536.0 THEN 48 WHEN latency_ms < 82570.18592591034 THEN 49 WHEN latency_ms < 104031.915341788 THEN 50 WHEN latency_ms < 131072.0 THEN 51 WHEN latency_ms < 165140.37185182067 THEN 52 WHEN latency_ms < 208063.830683576 THEN 53 WHEN latency_ms < 262144.0 THEN 54 WHEN latency_ms < 330280.74370364135 THEN 55 WHEN latency_ms < 416127.661367152 THEN 56 WHEN latency_ms < 524288.0 THEN 57 ELSE 58 END AS b
    FROM requests
) r
GROUP BY org_id, m, feature, mr, ma, provider, task, routed;

INSERT INTO rollup_hour (org_id, bucket, feature, model_requested, model_actual, provider, task, routed, requests, errors, upstream_errors, priced, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms_sum, l00, l01, l02, l03, l04, l05, l06, l07, l08, l09, l10, l11, l12, l13, l14, l15, l16, l17, l18, l19, l20, l21, l22, l23, l24, l25, l26, l27, l28, l29, l30, l31, l32, l33, l34, l35, l36, l37, l38, l39, l40, l41, l42, l43, l44, l45, l46, l47, l48, l49, l50, l51, l52, l53, l54, l55, l56, l57, l58)
SELECT org_id, (bucket / 3600) * 3600, feature, model_requested, model_actual, provider, task, routed, sum(requests), sum(errors), sum(upstream_errors), sum(priced), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(cost_usd), sum(latency_ms_sum), sum(l00), sum(l01), sum(l02), sum(l03), sum(l04), sum(l05), sum(l06), sum(l07), sum(l08), sum(l09), sum(l10), sum(l11), sum(l12), sum(l13), sum(l14), sum(l15), sum(l16), sum(l17), sum(l18), sum(l19), sum(l20), sum(l21), sum(l22), sum(l23), sum(l24), sum(l25), sum(l26), sum(l27), sum(l28), sum(l29), sum(l30), sum(l31), sum(l32), sum(l33), sum(l34), sum(l35), sum(l36), sum(l37), sum(l38), sum(l39), sum(l40), sum(l41), sum(l42), sum(l43), sum(l44), sum(l45), sum(l46), sum(l47), sum(l48), sum(l49), sum(l50), sum(l51), sum(l52), sum(l53), sum(l54), sum(l55), sum(l56), sum(l57), sum(l58)
FROM rollup_minute GROUP BY org_id, (bucket / 3600) * 3600, feature, model_requested, model_actual, provider, task, routed;

INSERT INTO rollup_day (org_id, bucket, feature, model_requested, model_actual, provider, task, routed, requests, errors, upstream_errors, priced, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms_sum, l00, l01, l02, l03, l04, l05, l06, l07, l08, l09, l10, l11, l12, l13, l14, l15, l16, l17, l18, l19, l20, l21, l22, l23, l24, l25, l26, l27, l28, l29, l30, l31, l32, l33, l34, l35, l36, l37, l38, l39, l40, l41, l42, l43, l44, l45, l46, l47, l48, l49, l50, l51, l52, l53, l54, l55, l56, l57, l58)
SELECT org_id, (bucket / 86400) * 86400, feature, model_requested, model_actual, provider, task, routed, sum(requests), sum(errors), sum(upstream_errors), sum(priced), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(cost_usd), sum(latency_ms_sum), sum(l00), sum(l01), sum(l02), sum(l03), sum(l04), sum(l05), sum(l06), sum(l07), sum(l08), sum(l09), sum(l10), sum(l11), sum(l12), sum(l13), sum(l14), sum(l15), sum(l16), sum(l17), sum(l18), sum(l19), sum(l20), sum(l21), sum(l22), sum(l23), sum(l24), sum(l25), sum(l26), sum(l27), sum(l28), sum(l29), sum(l30), sum(l31), sum(l32), sum(l33), sum(l34), sum(l35), sum(l36), sum(l37), sum(l38), sum(l39), sum(l40), sum(l41), sum(l42), sum(l43), sum(l44), sum(l45), sum(l46), sum(l47), sum(l48), sum(l49), sum(l50), sum(l51), sum(l52), sum(l53), sum(l54), sum(l55), sum(l56), sum(l57), sum(l58)
FROM rollup_minute GROUP BY org_id, (bucket / 86400) * 86400, feature, model_requested, model_actual, provider, task, routed;
