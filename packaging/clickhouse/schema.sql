-- hubprobe fleet reports in ClickHouse: the report NDJSON loads as it is, one
-- report per row in `raw`; the columns the fleet queries group by are extracted
-- once, on insert. Load with:
--   clickhouse-client --query "INSERT INTO hubprobe_reports (raw) FORMAT JSONAsString" < reports.ndjson
-- (gzip: add `--compression gzip` or pipe through zcat). queries.sql holds the
-- aggregation `hubprobe fleet summarize` does, over the view below, which keeps
-- hubprobe.report/1 reports only and drops repeats (store-and-forward uploads
-- the same report id again).

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
