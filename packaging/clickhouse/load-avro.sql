-- Loading the Avro object container files that IoT Hub message routing writes to
-- storage (schema Microsoft.Azure.Devices.Message) into hubprobe_reports
-- (schema.sql). Event Hubs Capture files (Microsoft.ServiceBus.Messaging.EventData)
-- declare their property maps as unions with null, which ClickHouse's schema
-- inference rejects ("Variant cannot be inside Nullable"): read those with an
-- explicit structure, e.g. file('{file}', 'Avro', 'Properties Map(String,
-- Variant(Int64, Float64, String, Bool)), SystemProperties Map(String,
-- Variant(Int64, Float64, String, Bool)), Body String') and toString() on the
-- property values (not tested here), or with `hubprobe fleet summarize`.
-- ClickHouse reads Avro natively; {file} is the path or glob of the files (with
-- clickhouse-client, `INSERT ... FORMAT Avro` on stdin, or the s3 /
-- azureBlobStorage table functions over the storage container, work the same).
-- Kept: the hubprobe messages (property hubprobe=report) whose body is the report's
-- JSON, sent by the device the report names (the hub's connection device id, when
-- the message has one, must match, as `hubprobe fleet summarize` checks).
-- ClickHouse has no SQL function that inflates gzip, so bodies compressed by the
-- data-budget encoding are left out here: the avro_skipped query counts them, and
-- `hubprobe fleet summarize` reads those files whole. (The setting makes ClickHouse
-- read the Avro schema from the files instead of taking the table's columns.)

INSERT INTO hubprobe_reports (raw)
SELECT Body
FROM file('{file}', 'Avro')
WHERE Properties['hubprobe'] = 'report'
  AND NOT startsWith(Body, unhex('1F8B'))
  AND coalesce(nullIf(SystemProperties['iothub-connection-device-id'], ''),
               nullIf(SystemProperties['connectionDeviceId'], ''),
               if(JSONExtractString(Body, 'target', 'device_id') != '',
                  JSONExtractString(Body, 'target', 'device_id'),
                  JSONExtractString(Body, 'host')))
      = if(JSONExtractString(Body, 'target', 'device_id') != '',
           JSONExtractString(Body, 'target', 'device_id'),
           JSONExtractString(Body, 'host'))
SETTINGS use_structure_from_insertion_table_in_table_functions = 0;

-- name: avro_skipped
-- What the load above left out: messages that are not hubprobe reports (foreign),
-- gzip-compressed report bodies, and reports from another device than the hub saw.
SELECT countIf(Properties['hubprobe'] != 'report') AS foreign,
       countIf(Properties['hubprobe'] = 'report' AND startsWith(Body, unhex('1F8B'))) AS gzip,
       countIf(Properties['hubprobe'] = 'report' AND NOT startsWith(Body, unhex('1F8B'))
               AND coalesce(nullIf(SystemProperties['iothub-connection-device-id'], ''),
                            nullIf(SystemProperties['connectionDeviceId'], ''), '') NOT IN
                   ('', if(JSONExtractString(Body, 'target', 'device_id') != '',
                           JSONExtractString(Body, 'target', 'device_id'),
                           JSONExtractString(Body, 'host')))) AS wrong_device,
       count() AS messages
FROM file('{file}', 'Avro');
