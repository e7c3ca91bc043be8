#!/usr/bin/env python3
"""Runs packaging/clickhouse/schema.sql and queries.sql in chDB (ClickHouse's
engine in-process) over an NDJSON file of hubprobe reports, or over Avro files as
IoT Hub routing writes them (a path ending in .avro: loaded with load-avro.sql,
whose named queries run too); prints one JSON object {query name: rows}. Given
several data paths, runs each in a fresh session of the same interpreter (chDB is
started once) and prints a JSON array of those objects, in the order given. Used by
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


def run(s, sql_dir, data):
    data = os.path.abspath(data)
    # A fresh database for each data file.
    s.query("DROP DATABASE IF EXISTS fleet")
    s.query("CREATE DATABASE fleet")
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
            sys.exit(f"query {name} on {data}: {e}")
        result[name] = json.loads(r.bytes() if hasattr(r, "bytes") else str(r))["data"]
    return result


def main():
    sql_dir, data = sys.argv[1], sys.argv[2:]
    if not data:
        sys.exit("usage: fleet_chdb.py SQL_DIR DATA [DATA...]")
    with tempfile.TemporaryDirectory() as tmp:
        s = session.Session(tmp)
        results = [run(s, sql_dir, d) for d in data]
        s.close()
    json.dump(results[0] if len(data) == 1 else results, sys.stdout)


if __name__ == "__main__":
    main()
