#!/usr/bin/env python3
"""DuckDB on the same lake as `crowsnest bench --lake`: the same Parquet files, the same SQL.

Usage: duckdb_lake_bench.py LAKE_DIR THREADS REPEAT < queries.json
queries.json: [{"name": "...", "sql": "..."}, ...]; names without spaces.
Prints one line per query, `NAME SECONDS ROWS` (the fastest of REPEAT runs), or
`NAME error MESSAGE`. Needs `pip install duckdb`."""
import json
import sys
import time

import duckdb

lake, threads, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
queries = json.load(sys.stdin)
con = duckdb.connect()
con.execute(f"SET threads TO {threads}")
# Timestamps are stored as UTC instants; literals and displays in UTC too, as in Crowsnest.
con.execute("SET TimeZone = 'UTC'")
for table in ("kube_audit", "container_log"):
    # The names Crowsnest's hunt session gives the lake's tables with their partition columns.
    # date and hour as strings (DuckDB would make date a DATE), so `"date" = 'YYYY-MM-DD'`
    # compares the same way in both; `table` is the directory above, not a column there.
    con.execute(f"""
        CREATE VIEW __lake_{table} AS SELECT * EXCLUDE ("table")
        FROM read_parquet('{lake}/table={table}/*/*/*.parquet', hive_partitioning = true,
                          hive_types = {{'date': VARCHAR, 'hour': VARCHAR}})""")
for q in queries:
    try:
        best, rows = float("inf"), 0
        for _ in range(repeat):
            t = time.perf_counter()
            # fetchall: the bench's hunts return few rows, so converting them costs next to nothing.
            rows = len(con.execute(q["sql"]).fetchall())
            best = min(best, time.perf_counter() - t)
        print(f"{q['name']} {best:.6f} {rows}", flush=True)
    except duckdb.Error as e:
        print(f"{q['name']} error {' '.join(str(e).split())}", flush=True)
