"""`crowsnest bench --flight-sql`'s client: connects to serve-sql with Python's ADBC Flight SQL
driver and reads one query's whole result as Arrow, REPEAT times. Prints, per run, the seconds
from connecting to the last row in memory, and the rows: `SECONDS ROWS`."""

import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql

uri, repeat, sql = sys.argv[1], int(sys.argv[2]), sys.stdin.read()
for _ in range(repeat):
    started = time.perf_counter()
    with flight_sql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    print(f"{time.perf_counter() - started:.4f} {table.num_rows}", flush=True)
