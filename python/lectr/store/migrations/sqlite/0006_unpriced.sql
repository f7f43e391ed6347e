-- Rollups count unpriced requests (usage known, no price for the model),
-- as lectr_unpriced_requests_total does: `requests - priced` also counted
-- failed requests, which carry no usage. Backfilled from the request log.
ALTER TABLE rollup_minute ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_hour ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_day ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0;

CREATE TEMP TABLE unpriced_backfill AS
SELECT org_id, CAST(ts / 60 AS INTEGER) * 60 AS m, feature, coalesce(model_requested, '') AS mr,
    coalesce(model_actual, '') AS ma, provider, coalesce(task, '') AS task,
    CASE WHEN rule_id IS NOT NULL AND rule_id NOT LIKE '%:%' THEN 1 ELSE 0 END AS routed, count(*) AS n
FROM requests
WHERE cost_usd IS NULL AND (prompt_tokens IS NOT NULL OR completion_tokens IS NOT NULL)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

UPDATE rollup_minute AS r SET unpriced = s.n
FROM (
    SELECT org_id, m / 60 * 60 AS m, feature, mr, ma, provider, task, routed, sum(n) AS n
    FROM unpriced_backfill GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
) AS s
WHERE r.org_id = s.org_id AND r.bucket = s.m AND r.feature = s.feature AND r.model_requested = s.mr AND r.model_actual = s.ma AND r.provider = s.provider AND r.task = s.task AND r.routed = s.routed;

UPDATE rollup_hour AS r SET unpriced = s.n
FROM (
    SELECT org_id, m / 3600 * 3600 AS m, feature, mr, ma, provider, task, routed, sum(n) AS n
    FROM unpriced_backfill GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
) AS s
WHERE r.org_id = s.org_id AND r.bucket = s.m AND r.feature = s.feature AND r.model_requested = s.mr AND r.model_actual = s.ma AND r.provider = s.provider AND r.task = s.task AND r.routed = s.routed;

UPDATE rollup_day AS r SET unpriced = s.n
FROM (
    SELECT org_id, m / 86400 * 86400 AS m, feature, mr, ma, provider, task, routed, sum(n) AS n
    FROM unpriced_backfill GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
) AS s
WHERE r.org_id = s.org_id AND r.bucket = s.m AND r.feature = s.feature AND r.model_requested = s.mr AND r.model_actual = s.ma AND r.provider = s.provider AND r.task = s.task AND r.routed = s.routed;

DROP TABLE unpriced_backfill;
