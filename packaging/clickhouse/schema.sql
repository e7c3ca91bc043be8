-- hubprobe fleet reports in ClickHouse: the report NDJSON loads as it is, one
-- report per row in `raw`; the columns the fleet queries group by are extracted
-- once, on insert. Load with:
--   clickhouse-client --query "INSERT INTO hubprobe_reports (raw) FORMAT JSONAsString" < reports.ndjson
-- (gzip: add `--compression gzip` or pipe through zcat). queries.sql holds the
-- aggregation `hubprobe fleet summarize` does, over the view below, which keeps
-- hubprobe.report/1 reports only and drops repeats (store-and-forward uploads
-- the same report id again), and over hubprobe_disconnects_v1, which counts each
-- canary disconnect record once: a record with an `id` is repeated by later
-- reports once it is complete (reconnect_s, failed_attempts), and only its latest
-- version (the report with the latest started_at) is kept; records without an id
-- (older agents) are kept as they come.

CREATE TABLE IF NOT EXISTS hubprobe_reports
(
    raw String,
    schema LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'schema'),
    id String MATERIALIZED JSONExtractString(raw, 'id'),
    device String MATERIALIZED if(JSONExtractString(raw, 'target', 'device_id') != '',
                                  JSONExtractString(raw, 'target', 'device_id'),
                                  JSONExtractString(raw, 'host')),
    kind LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'kind'),
    started_at DateTime64(3, 'UTC') MATERIALIZED parseDateTime64BestEffort(JSONExtractString(raw, 'started_at'), 3, 'UTC'),
    verdict LowCardinality(String) MATERIALIZED JSONExtractString(raw, 'verdict'),
    labels Map(String, String) MATERIALIZED JSONExtract(raw, 'labels', 'Map(String, String)')
)
ENGINE = MergeTree
ORDER BY (device, started_at, id);

CREATE VIEW IF NOT EXISTS hubprobe_reports_v1 AS
SELECT raw, id, device, kind, started_at, verdict, labels
FROM hubprobe_reports
WHERE schema = 'hubprobe.report/1' OR startsWith(schema, 'hubprobe.report/1.')
LIMIT 1 BY id;

CREATE VIEW IF NOT EXISTS hubprobe_disconnects_v1 AS
SELECT device, started_at, ev_id, at_unix_ms, cause, has_reconnect, reconnect_s, failed_attempts
FROM
(
    SELECT device, started_at,
           JSONExtractString(ev, 'id') AS ev_id,
           JSONExtractUInt(ev, 'at_unix_ms') AS at_unix_ms,
           JSONExtractString(ev, 'cause') AS cause,
           JSONHas(ev, 'reconnect_s') AS has_reconnect,
           JSONExtractFloat(ev, 'reconnect_s') AS reconnect_s,
           JSONExtractUInt(ev, 'failed_attempts') AS failed_attempts
    FROM hubprobe_reports_v1
    ARRAY JOIN JSONExtractArrayRaw(raw, 'canary', 'recent') AS ev
)
WHERE ev_id != ''
ORDER BY device, ev_id, started_at DESC, has_reconnect DESC, failed_attempts DESC
LIMIT 1 BY device, ev_id
UNION ALL
SELECT device, started_at, '' AS ev_id,
       JSONExtractUInt(ev, 'at_unix_ms') AS at_unix_ms,
       JSONExtractString(ev, 'cause') AS cause,
       JSONHas(ev, 'reconnect_s') AS has_reconnect,
       JSONExtractFloat(ev, 'reconnect_s') AS reconnect_s,
       JSONExtractUInt(ev, 'failed_attempts') AS failed_attempts
FROM hubprobe_reports_v1
ARRAY JOIN JSONExtractArrayRaw(raw, 'canary', 'recent') AS ev
WHERE JSONExtractString(ev, 'id') = '';
