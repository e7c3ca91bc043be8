#!/usr/bin/env python3
"""Runs packaging/clickhouse/schema.sql and queries.sql in chDB (ClickHouse's
engine in-process) over an NDJSON file of hubprobe reports, or over Avro files as
IoT Hub routing writes them (a path ending in .avro: loaded with load-avro.sql,
whose named queries run too); prints one JSON object {query name: rows}. Used by
tests/fleet_clickhouse.rs and the benchmark."""
import json
import os
import re
import sys
import tempfile

from chdb import session


def statements(text):
    body = "\n".join(l for l in text.splitlines() if not l.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def named_queries(text):
    out = {}
    for part in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, sql = part.partition("\n")
        out[name.strip()] = "\n".join(
            l for l in sql.splitlines() if not l.strip().startswith("--")
        ).strip().rstrip(";")
    return out


def main():
    sql_dir, data = sys.argv[1], os.path.abspath(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        s = session.Session(tmp)
        s.query("CREATE DATABASE IF NOT EXISTS fleet")
        s.query("USE fleet")
        for st in statements(open(os.path.join(sql_dir, "schema.sql")).read()):
            s.query(st)
        result = {}
        if data.endswith(".avro"):
            load = open(os.path.join(sql_dir, "load-avro.sql")).read().replace("{file}", data)
            first, _, named = load.partition("-- name: ")
            for st in statements(first):
                s.query(st)
            for name, sql in named_queries("-- name: " + named).items():
                r = s.query(sql + " FORMAT JSON")
                result[name] = json.loads(r.bytes() if hasattr(r, "bytes") else str(r))["data"]
        else:
            s.query(
                f"INSERT INTO hubprobe_reports (raw) SELECT * FROM file('{data}', 'JSONAsString')"
            )
        for name, sql in named_queries(open(os.path.join(sql_dir, "queries.sql")).read()).items():
            try:
                r = s.query(sql + " FORMAT JSON")
            except Exception as e:
                sys.exit(f"query {name}: {e}")
            result[name] = json.loads(r.bytes() if hasattr(r, "bytes") else str(r))["data"]
        s.close()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
