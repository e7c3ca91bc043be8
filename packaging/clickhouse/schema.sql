-- hubprobe fleet reports in ClickHouse: the report NDJSON loads as it is, one
-- report per row in `raw`; the columns the fleet queries group by are extracted
-- once, on insert. Load with:
--   clickhouse-client --query "INSERT INTO hubprobe_reports (raw) FORMAT JSONAsString" < reports.ndjson
-- (gzip: add `--compression gzip` or pipe through zcat). The Avro container files
-- IoT Hub message routing and Event Hubs Capture write load natively with
-- load-avro.sql. queries.sql holds the
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
SELECT device, started_at, ev_id, at_unix_ms, cause, has_reconnect, reconnect_s, failed_attempts, labels
FROM
(
    SELECT device, started_at, labels,
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
       JSONExtractUInt(ev, 'failed_attempts') AS failed_attempts,
       labels
FROM hubprobe_reports_v1
ARRAY JOIN JSONExtractArrayRaw(raw, 'canary', 'recent') AS ev
WHERE JSONExtractString(ev, 'id') = '';

-- One row per (5-minute bucket, signature, device) of the incident view: a canary
-- disconnect of a cause (token renewals excluded) or a check that failed with a
-- class, with the network and site labels of the report that carried it. The
-- windows query in queries.sql flags buckets from these. (300000 ms is the
-- default --bucket; change it here and in queries.sql together.)
CREATE VIEW IF NOT EXISTS hubprobe_signatures_v1 AS
SELECT DISTINCT bucket, signature, device, network, site
FROM
(
    SELECT intDiv(toInt64(at_unix_ms), 300000) AS bucket,
           concat('disconnect:', cause) AS signature,
           device,
           if(mapContains(labels, 'network'), labels['network'], '(none)') AS network,
           if(mapContains(labels, 'site'), labels['site'], '(none)') AS site
    FROM hubprobe_disconnects_v1
    WHERE cause != 'token_renewal' AND at_unix_ms >= 946684800000 AND at_unix_ms < 4102444800000
    UNION ALL
    SELECT intDiv(toUnixTimestamp64Milli(started_at), 300000) AS bucket,
           concat('check:', JSONExtractString(ph, 'class')) AS signature,
           device,
           if(mapContains(labels, 'network'), labels['network'], '(none)') AS network,
           if(mapContains(labels, 'site'), labels['site'], '(none)') AS site
    FROM hubprobe_reports_v1
    ARRAY JOIN JSONExtractArrayRaw(raw, 'endpoints') AS ep
    ARRAY JOIN JSONExtractArrayRaw(ep, 'phases') AS ph
    WHERE JSONExtractString(ph, 'status') = 'failed' AND JSONExtractString(ph, 'class') != ''
      AND toUnixTimestamp64Milli(started_at) >= 946684800000
      AND toUnixTimestamp64Milli(started_at) < 4102444800000
);

-- The flagged windows of the incident view, as `hubprobe fleet summarize` flags
-- them (src/fleet/incident.rs): a bucket stands out for a signature when the
-- devices showing it are at least min_devices (2 % of all devices, at least 5)
-- above that signature's median over every bucket covered (the empty ones
-- included; the buckets covered run from the earliest to the latest of the
-- plausible report starts and the events) and at least three times it;
-- consecutive standing-out buckets of a signature form a run; runs that overlap or
-- start within two buckets of the end of the runs before are one window.
-- One row per window: w (its number), s and e (first and last bucket), signatures.
CREATE VIEW IF NOT EXISTS hubprobe_windows_v1 AS
WITH
    (SELECT uniqExact(device) FROM hubprobe_reports_v1) AS devices_total,
    greatest(toUInt64(ceil(devices_total * 0.02)), 5) AS min_devices,
    counts AS
    (
        SELECT signature, bucket, uniqExact(device) AS c
        FROM hubprobe_signatures_v1
        GROUP BY signature, bucket
    ),
    covered AS
    (
        SELECT least(if(r.n > 0, r.lo, c.lo), c.lo) AS lo, greatest(if(r.n > 0, r.hi, c.hi), c.hi) AS hi
        FROM
        (
            SELECT count() AS n,
                   min(intDiv(toUnixTimestamp64Milli(started_at), 300000)) AS lo,
                   max(intDiv(toUnixTimestamp64Milli(started_at), 300000)) AS hi
            FROM hubprobe_reports_v1
            WHERE toUnixTimestamp64Milli(started_at) >= 946684800000
              AND toUnixTimestamp64Milli(started_at) < 4102444800000
        ) AS r
        CROSS JOIN (SELECT min(bucket) AS lo, max(bucket) AS hi FROM counts) AS c
    ),
    baselines AS
    (
        SELECT signature,
               arraySort(groupArray(c)) AS sorted,
               toUInt64(any(covered.hi) - any(covered.lo) + 1) AS n,
               n - length(sorted) AS zeros,
               intDiv(n, 2) AS mid,
               if(mid < zeros, 0, sorted[mid - zeros + 1]) AS baseline
        FROM counts CROSS JOIN covered
        GROUP BY signature
    ),
    hot AS
    (
        SELECT counts.signature AS signature, counts.bucket AS bucket
        FROM counts INNER JOIN baselines ON counts.signature = baselines.signature
        WHERE counts.c >= baselines.baseline + min_devices
          AND counts.c >= 3 * greatest(baselines.baseline, 1)
    ),
    runs AS
    (
        SELECT signature, min(bucket) AS s, max(bucket) AS e
        FROM
        (
            SELECT signature, bucket,
                   bucket - row_number() OVER (PARTITION BY signature ORDER BY bucket) AS island
            FROM hot
        )
        GROUP BY signature, island
    ),
    merged AS
    (
        SELECT s, e, signature,
               sum(new) OVER (ORDER BY s, signature ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS w
        FROM
        (
            SELECT s, e, signature,
                   if(row_number() OVER (ORDER BY s, signature) = 1
                      OR s > max(e) OVER (ORDER BY s, signature ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + 2,
                      1, 0) AS new
            FROM runs
        )
    )
SELECT w, min(s) AS s, max(e) AS e, arraySort(groupUniqArray(signature)) AS signatures
FROM merged
GROUP BY w;
