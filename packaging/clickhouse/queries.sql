-- The aggregation of `hubprobe fleet summarize`, as ClickHouse SQL over the view
-- hubprobe_reports_v1 (schema.sql). Each query is named by a `-- name:` line;
-- tests/fleet_clickhouse.rs runs them in chDB on the same reports as
-- `fleet summarize` and checks both give the same numbers (percentiles: within the
-- summary's 1 % histogram error; ClickHouse's quantileExact is the reference).
-- Times outside 2000-01-01 → 2100-01-01 (946684800000 ≤ ms < 4102444800000) are a
-- device clock gone wrong: they are counted (implausible_times) but neither pick a
-- device's latest report nor go on the timeline.

-- name: totals
SELECT
    (SELECT count() FROM hubprobe_reports_v1) AS reports,
    (SELECT uniqExact(device) FROM hubprobe_reports_v1) AS devices,
    (SELECT count() FROM hubprobe_reports) - (SELECT uniqExact(id) FROM hubprobe_reports) AS duplicates;

-- name: kinds
SELECT kind, count() AS reports FROM hubprobe_reports_v1 GROUP BY kind ORDER BY kind;

-- name: latest_verdicts
-- The verdict of each device's latest report (a believable time first; ties: the
-- more severe verdict).
SELECT verdict, count() AS devices
FROM
(
    SELECT device,
           argMax(verdict, (toUnixTimestamp64Milli(started_at) >= 946684800000
                                AND toUnixTimestamp64Milli(started_at) < 4102444800000,
                            started_at,
                            indexOf(['ok', 'warning', 'critical', 'unknown'], verdict))) AS verdict
    FROM hubprobe_reports_v1
    GROUP BY device
)
GROUP BY verdict
ORDER BY verdict;

-- name: phases
-- Success share over attempts (skips excluded); percentiles of successful phases.
SELECT
    endpoint,
    phase,
    countIf(status IN ('ok', 'failed')) AS attempts,
    countIf(status = 'ok') AS ok,
    countIf(status = 'failed') AS failed,
    countIf(status = 'skipped') AS skipped,
    if(attempts > 0, ok / attempts, NULL) AS success_share,
    quantileExactIf(0.5)(duration_ms, status = 'ok' AND has_duration) AS p50_ms,
    quantileExactIf(0.9)(duration_ms, status = 'ok' AND has_duration) AS p90_ms,
    quantileExactIf(0.99)(duration_ms, status = 'ok' AND has_duration) AS p99_ms
FROM
(
    SELECT
        JSONExtractString(ep, 'name') AS endpoint,
        JSONExtractString(ph, 'phase') AS phase,
        JSONExtractString(ph, 'status') AS status,
        JSONHas(ph, 'duration_ms') AS has_duration,
        JSONExtractFloat(ph, 'duration_ms') AS duration_ms
    FROM hubprobe_reports_v1
    ARRAY JOIN JSONExtractArrayRaw(raw, 'endpoints') AS ep
    ARRAY JOIN JSONExtractArrayRaw(ep, 'phases') AS ph
)
GROUP BY endpoint, phase
ORDER BY endpoint, phase;

-- name: failure_classes
-- Ranked by devices affected, with an example device (the first by name).
SELECT class, uniqExact(device) AS devices, count() AS reports, min(device) AS example_device
FROM
(
    SELECT device, JSONExtractString(ph, 'class') AS class
    FROM hubprobe_reports_v1
    ARRAY JOIN JSONExtractArrayRaw(raw, 'endpoints') AS ep
    ARRAY JOIN JSONExtractArrayRaw(ep, 'phases') AS ph
    WHERE JSONExtractString(ph, 'status') = 'failed' AND class != ''
)
GROUP BY class
ORDER BY devices DESC, class;

-- name: trust_anchors
SELECT anchor AS name, uniqExact(device) AS devices
FROM
(
    SELECT device, JSONExtractString(ph, 'evidence', 'trust_anchor', 'name') AS anchor
    FROM hubprobe_reports_v1
    ARRAY JOIN JSONExtractArrayRaw(raw, 'endpoints') AS ep
    ARRAY JOIN JSONExtractArrayRaw(ep, 'phases') AS ph
    WHERE anchor != ''
)
GROUP BY name
ORDER BY devices DESC, name;

-- name: unknown_ca
SELECT uniqExact(device) AS devices
FROM hubprobe_reports_v1
ARRAY JOIN JSONExtractArrayRaw(raw, 'endpoints') AS ep
ARRAY JOIN JSONExtractArrayRaw(ep, 'phases') AS ph
WHERE JSONExtractString(ph, 'status') = 'failed' AND JSONExtractString(ph, 'class') = 'tls.unknown_ca';

-- name: clock
-- |server − device| clock offsets, seconds (HTTPS Date header).
SELECT count() AS reports,
       quantileExact(0.5)(abs(off)) AS p50_s,
       quantileExact(0.9)(abs(off)) AS p90_s,
       quantileExact(0.99)(abs(off)) AS p99_s,
       uniqExactIf(device, abs(off) > 60) AS devices_over_warning
FROM
(
    SELECT device, JSONExtractFloat(ph, 'evidence', 'clock_offset_s') AS off
    FROM hubprobe_reports_v1
    ARRAY JOIN JSONExtractArrayRaw(raw, 'endpoints') AS ep
    ARRAY JOIN JSONExtractArrayRaw(ep, 'phases') AS ph
    WHERE JSONHas(ph, 'evidence', 'clock_offset_s')
);

-- name: keepalive_recommended
SELECT JSONExtractUInt(raw, 'keepalive', 'recommendation', 'keepalive_s') AS value, count() AS reports
FROM hubprobe_reports_v1
WHERE JSONHas(raw, 'keepalive', 'recommendation', 'keepalive_s')
GROUP BY value
ORDER BY value;

-- name: idle_timeouts
-- Measured path idle timeouts, rounded to whole seconds.
SELECT intDiv(JSONExtractUInt(raw, 'keepalive', 'discovery', 'estimate_ms') + 500, 1000) AS value, count() AS reports
FROM hubprobe_reports_v1
WHERE JSONHas(raw, 'keepalive', 'discovery', 'estimate_ms')
GROUP BY value
ORDER BY value;

-- name: disconnects
-- Each disconnect once (its latest version, see hubprobe_disconnects_v1); outage
-- lengths from the records whose session was back.
SELECT cause, count() AS events, uniqExact(device) AS devices,
       countIf(has_reconnect) AS reconnected,
       quantileExactIf(0.5)(reconnect_s, has_reconnect) AS reconnect_p50_s,
       quantileExactIf(0.9)(reconnect_s, has_reconnect) AS reconnect_p90_s,
       quantileExactIf(0.99)(reconnect_s, has_reconnect) AS reconnect_p99_s,
       sum(failed_attempts) AS failed_attempts
FROM hubprobe_disconnects_v1
GROUP BY cause
ORDER BY cause;

-- name: implausible_times
SELECT
    (SELECT count() FROM hubprobe_reports_v1
     WHERE NOT (toUnixTimestamp64Milli(started_at) >= 946684800000
                AND toUnixTimestamp64Milli(started_at) < 4102444800000)) AS reports,
    (SELECT count() FROM hubprobe_disconnects_v1
     WHERE NOT (at_unix_ms >= 946684800000 AND at_unix_ms < 4102444800000)) AS disconnects;

-- name: timeline
-- Per 5-minute bucket: devices whose canary disconnected (token renewals are the
-- client's own reconnects, not failures), devices with a failed check, checks and
-- failed checks. The incident view flags buckets from these per-signature counts.
SELECT bucket_ms,
       sum(disconnected) AS disconnected_devices,
       sum(failed_devices) AS failed_devices,
       sum(checks) AS checks,
       sum(failed_checks) AS failed_checks
FROM
(
    SELECT toInt64(intDiv(at_unix_ms, 300000) * 300000) AS bucket_ms,
           toUInt64(uniqExact(device)) AS disconnected, toUInt64(0) AS failed_devices,
           toUInt64(0) AS checks, toUInt64(0) AS failed_checks
    FROM hubprobe_disconnects_v1
    WHERE cause != 'token_renewal' AND at_unix_ms >= 946684800000 AND at_unix_ms < 4102444800000
    GROUP BY bucket_ms
    UNION ALL
    SELECT toInt64(intDiv(toUnixTimestamp64Milli(started_at), 300000) * 300000) AS bucket_ms,
           toUInt64(0), toUInt64(uniqExactIf(device, failed)), toUInt64(count()), toUInt64(countIf(failed))
    FROM
    (
        SELECT device, started_at,
               arrayExists(ep -> arrayExists(ph -> JSONExtractString(ph, 'status') = 'failed',
                                              JSONExtractArrayRaw(ep, 'phases')),
                           JSONExtractArrayRaw(raw, 'endpoints')) AS failed
        FROM hubprobe_reports_v1
        WHERE length(JSONExtractArrayRaw(raw, 'endpoints')) > 0
          AND toUnixTimestamp64Milli(started_at) >= 946684800000
          AND toUnixTimestamp64Milli(started_at) < 4102444800000
    )
    GROUP BY bucket_ms
)
GROUP BY bucket_ms
ORDER BY bucket_ms;

-- name: incident_windows
-- The flagged windows (hubprobe_windows_v1) with the devices showing one of their
-- signatures inside them, and where those devices are: a window whose devices sit
-- at one network or one site (>= 90 %) is network-side (IoT Hub 404104 cause 2),
-- one spread over 3 networks or more is the hub (cause 3), else unclear.
SELECT w.s * 300000 AS from_ms,
       (w.e + 1) * 300000 AS to_ms,
       w.signatures AS signatures,
       m.devices AS devices,
       m.networks AS networks,
       m.sites AS sites,
       multiIf(m.top_network >= 0.9 * m.devices OR m.top_site >= 0.9 * m.devices, 'network',
               m.networks >= 3, 'hub',
               'unclear') AS likely_cause
FROM hubprobe_windows_v1 AS w
INNER JOIN
(
    SELECT w,
           count() AS devices,
           uniqExact(network) AS networks,
           uniqExact(site) AS sites,
           max(net_n) AS top_network,
           max(site_n) AS top_site
    FROM
    (
        SELECT w, device, network, site,
               count() OVER (PARTITION BY w, network) AS net_n,
               count() OVER (PARTITION BY w, site) AS site_n
        FROM
        (
            SELECT win.w AS w, v.device AS device, any(v.network) AS network, any(v.site) AS site
            FROM hubprobe_windows_v1 AS win
            ARRAY JOIN win.signatures AS sig
            INNER JOIN hubprobe_signatures_v1 AS v ON v.signature = sig
            WHERE v.bucket >= win.s AND v.bucket <= win.e
            GROUP BY w, device
        )
    )
    GROUP BY w
) AS m ON m.w = w.w
ORDER BY from_ms;

-- name: groups_by_site
-- `--by site`: reports, devices and the latest verdicts per value of the label
-- (a device counts in the group of its latest report; `(none)` without the label).
-- Replace 'site' for another label key.
SELECT value,
       sum(reports) AS reports,
       uniqExact(device) AS devices,
       countIf(latest_here AND verdict = 'ok') AS ok,
       countIf(latest_here AND verdict = 'warning') AS warning,
       countIf(latest_here AND verdict = 'critical') AS critical,
       countIf(latest_here AND verdict = 'unknown') AS unknown
FROM
(
    SELECT value, device, reports, latest.2 = value AS latest_here, latest.1 AS verdict
    FROM
    (
        SELECT if(mapContains(labels, 'site'), labels['site'], '(none)') AS value, device, count() AS reports
        FROM hubprobe_reports_v1
        GROUP BY value, device
    ) AS g
    INNER JOIN
    (
        SELECT device,
               argMax((verdict, if(mapContains(labels, 'site'), labels['site'], '(none)')),
                      (toUnixTimestamp64Milli(started_at) >= 946684800000
                           AND toUnixTimestamp64Milli(started_at) < 4102444800000,
                       started_at,
                       indexOf(['ok', 'warning', 'critical', 'unknown'], verdict))) AS latest
        FROM hubprobe_reports_v1
        GROUP BY device
    ) AS l USING device
)
GROUP BY value
ORDER BY value;

-- name: group_phases_by_site
-- `--by site`: per value, endpoint and phase, the success share over attempts.
SELECT value, endpoint, phase,
       countIf(status IN ('ok', 'failed')) AS attempts,
       countIf(status = 'ok') AS ok
FROM
(
    SELECT if(mapContains(labels, 'site'), labels['site'], '(none)') AS value,
           JSONExtractString(ep, 'name') AS endpoint,
           JSONExtractString(ph, 'phase') AS phase,
           JSONExtractString(ph, 'status') AS status
    FROM hubprobe_reports_v1
    ARRAY JOIN JSONExtractArrayRaw(raw, 'endpoints') AS ep
    ARRAY JOIN JSONExtractArrayRaw(ep, 'phases') AS ph
)
GROUP BY value, endpoint, phase
ORDER BY value, endpoint, phase;

-- name: group_top_failure_outside_incidents_by_site
-- `--by site`: the failure class on most of a value's devices outside the flagged
-- windows (ties: the first class by name), so a site's own trouble shows even when
-- a hub incident touched every site.
SELECT value, argMin(c, (-n, c)) AS class, max(n) AS devices
FROM
(
    SELECT site AS value, substring(signature, 7) AS c, uniqExact(device) AS n
    FROM hubprobe_signatures_v1
    WHERE startsWith(signature, 'check:')
      AND bucket NOT IN
      (
          SELECT arrayJoin(range(toInt64(s), toInt64(e) + 1)) FROM hubprobe_windows_v1
      )
    GROUP BY value, c
)
GROUP BY value
ORDER BY value;
