#!/usr/bin/env python3
"""The fleet benchmark's DuckDB reference: per endpoint and phase, attempts
(ok + failed) and successes over an NDJSON file of hubprobe reports; prints JSON
rows [endpoint, phase, attempts, ok]. Threads: argv[2] (default 2)."""
import json
import sys

import duckdb

path = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
rows = con.execute(
    """
    WITH eps AS (
        SELECT unnest(endpoints) AS ep
        FROM read_ndjson(?, columns = {
            'id': 'VARCHAR',
            'endpoints': 'STRUCT(name VARCHAR, phases STRUCT(phase VARCHAR, status VARCHAR)[])[]'
        }, maximum_object_size = 67108864)
    ), phs AS (
        SELECT ep.name AS endpoint, unnest(ep.phases) AS ph FROM eps
    )
    SELECT endpoint, ph.phase AS phase,
           count(*) FILTER (WHERE ph.status IN ('ok', 'failed')) AS attempts,
           count(*) FILTER (WHERE ph.status = 'ok') AS ok
    FROM phs
    GROUP BY endpoint, phase
    ORDER BY endpoint, phase
    """,
    [path],
).fetchall()
json.dump([list(r) for r in rows], sys.stdout)
