#!/usr/bin/env python3
"""Writes hubprobe reports (NDJSON, one per line) as the Avro object container files
IoT Hub message routing writes to storage (schema Microsoft.Azure.Devices.Message)
or Event Hubs Capture writes (Microsoft.ServiceBus.Messaging.EventData), with an
independent Avro implementation (PyPI fastavro). Used by tests/fleet_avro.rs.

usage: fleet_avro.py REPORTS.ndjson OUT.avro [--capture] [--codec null|deflate]
                     [--gzip-every N] [--foreign-every N] [--block-records N]
                     [--wrong-device-every N]
Every Nth report's body is gzip-compressed (--gzip-every), a foreign message (no
hubprobe=report property, another body) is written after every Nth report
(--foreign-every), every Nth report is sent under another device's id
(--wrong-device-every). Prints the message count of each kind as JSON.
"""
import argparse
import gzip
import json
import sys

import fastavro

ROUTING = {
    "type": "record",
    "name": "Message",
    "namespace": "Microsoft.Azure.Devices",
    "fields": [
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "Properties", "type": {"type": "map", "values": "string"}},
        {"name": "SystemProperties", "type": {"type": "map", "values": "string"}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}

CAPTURE = {
    "type": "record",
    "name": "EventData",
    "namespace": "Microsoft.ServiceBus.Messaging",
    "fields": [
        {"name": "SequenceNumber", "type": "long"},
        {"name": "Offset", "type": "string"},
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "SystemProperties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes", "null"]}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}


def device_of(report):
    return (report.get("target") or {}).get("device_id") or report["host"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reports")
    ap.add_argument("out")
    ap.add_argument("--capture", action="store_true")
    ap.add_argument("--codec", default="null")
    ap.add_argument("--gzip-every", type=int, default=0)
    ap.add_argument("--foreign-every", type=int, default=0)
    ap.add_argument("--wrong-device-every", type=int, default=0)
    ap.add_argument("--block-records", type=int, default=50)
    a = ap.parse_args()

    counts = {"reports": 0, "gzip": 0, "foreign": 0, "wrong_device": 0}

    def messages():
        # Streamed: a file of a million reports is never held in memory.
        for i, line in enumerate(open(a.reports, "rb")):
            line = line.strip()
            if not line:
                continue
            report = json.loads(line)
            body = line
            props = {"hubprobe": "report", "schema": "hubprobe.report/1"}
            if a.gzip_every and i % a.gzip_every == 0:
                body = gzip.compress(line)
                props["hubprobe-encoding"] = "gzip"
                counts["gzip"] += 1
            device = device_of(report)
            if a.wrong_device_every and i % a.wrong_device_every == a.wrong_device_every - 1:
                device = "someone-else"
                counts["wrong_device"] += 1
            enq = report["started_at"]
            if a.capture:
                system = {"iothub-connection-device-id": device, "iothub-enqueuedtime": enq,
                          "iothub-message-source": "Telemetry", "content-type": "application/json",
                          "x-opt-sequence-number": i}
            else:
                system = {"connectionDeviceId": device, "connectionAuthMethod": '{"scope":"device","type":"sas"}',
                          "enqueuedTime": enq, "contentType": "application/json", "contentEncoding": "utf-8"}
            counts["reports"] += 1
            yield (enq, props, system, body)
            if a.foreign_every and i % a.foreign_every == 0:
                other = json.dumps({"temperature": 21.5, "humidity": 40}).encode()
                counts["foreign"] += 1
                yield (enq, {"app": "telemetry"}, dict(system), other)

    def rows():
        for n, (enq, props, system, body) in enumerate(messages()):
            r = {"EnqueuedTimeUtc": enq, "Properties": props, "SystemProperties": system, "Body": body}
            if a.capture:
                r["SequenceNumber"] = n
                r["Offset"] = str(n * 1000)
            yield r

    schema = fastavro.parse_schema(CAPTURE if a.capture else ROUTING)
    with open(a.out, "wb") as f:
        _write(f, schema, rows(), a.codec, a.block_records)
    json.dump(counts, sys.stdout)


def _write(f, schema, rows, codec, block_records):
    # A block every `block_records` records, so that a file has several blocks.
    w = fastavro.write.Writer(f, schema, codec=codec)
    for n, r in enumerate(rows, 1):
        w.write(r)
        if n % block_records == 0:
            w.flush()
    w.flush()


if __name__ == "__main__":
    main()
