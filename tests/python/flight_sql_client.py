"""A real Flight SQL client for the integration tests: Python's ADBC driver (the Go Flight SQL
client analysts' notebooks use), driven by a JSON plan on stdin, one JSON answer per step on
stdout. The Rust tests decide what is right; this file only connects, runs and reports.

Plan: {"uri": "grpc://127.0.0.1:PORT", "token": "...", "user": "...", "password": "...",
       "tls_root_file": "ca.pem", "steps": [STEP, ...]}
Steps: {"sql": "...", "params": [...], "same_as_parquet": "file"} runs a query through ADBC,
       which prepares every statement (and compares its rows with a Parquet file `crowsnest
       hunt --format parquet` wrote); {"statement": "..."} runs one as Grafana's data source
       does, GetFlightInfo(CommandStatementQuery) then DoGet, with pyarrow's Flight client;
       {"ingest": "table"} tries a bulk ingestion; {"objects": true} lists tables;
       {"table_schema": "name"} gives a table's columns.
"""

import json
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.parquet as pq


def connect(plan):
    kwargs = {}
    if plan.get("token"):
        kwargs["adbc.flight.sql.authorization_header"] = "Bearer " + plan["token"]
    if plan.get("user") is not None:
        kwargs["username"] = plan["user"]
        kwargs["password"] = plan.get("password", "")
    if plan.get("tls_root_file"):
        with open(plan["tls_root_file"]) as f:
            kwargs["adbc.flight.sql.client_option.tls_root_certs"] = f.read()
    return flight_sql.connect(plan["uri"], db_kwargs=kwargs)


def classic(table):
    """Compare values, not encodings: string views and large strings count as strings."""
    fields = []
    for f in table.schema:
        t = f.type
        if t in (pa.string_view(), pa.large_string()):
            t = pa.string()
        if t == pa.binary_view():
            t = pa.binary()
        fields.append(pa.field(f.name, t, True))
    return table.cast(pa.schema(fields))


def protobuf_field(number, data):
    """A length-delimited protobuf field: enough to write the two messages a statement needs."""
    n, out = len(data), bytearray([number << 3 | 2])
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + data


def statement(plan, sql):
    """GetFlightInfo(CommandStatementQuery) and DoGet on each endpoint, as Go's Execute does."""
    import pyarrow.flight as fl

    command = protobuf_field(1, sql.encode())
    any_ = protobuf_field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + protobuf_field(2, command)
    kwargs = {}
    if plan.get("tls_root_file"):
        with open(plan["tls_root_file"], "rb") as f:
            kwargs["tls_root_certs"] = f.read()
    client = fl.FlightClient(plan["uri"], **kwargs)
    headers = [(b"authorization", ("Bearer " + plan["token"]).encode())] if plan.get("token") else []
    options = fl.FlightCallOptions(headers=headers)
    info = client.get_flight_info(fl.FlightDescriptor.for_command(any_), options)
    tables = [client.do_get(endpoint.ticket, options).read_all() for endpoint in info.endpoints]
    client.close()
    return pa.concat_tables(tables) if tables else info.schema.empty_table()


def error(e):
    return {"ok": False, "error": type(e).__name__, "message": str(e)}


def step(plan, conn, s):
    cur = conn.cursor()
    try:
        if "sql" in s or "statement" in s:
            started = time.perf_counter()
            if "statement" in s:
                table = statement(plan, s["statement"])
            elif s.get("params") is not None:
                cur.execute(s["sql"], tuple(s["params"]))
                table = cur.fetch_arrow_table()
            else:
                cur.execute(s["sql"])
                table = cur.fetch_arrow_table()
            out = {
                "ok": True,
                "rows": table.num_rows,
                "columns": table.schema.names,
                "types": [str(t) for t in table.schema.types],
                "seconds": time.perf_counter() - started,
            }
            if s.get("first_rows"):
                out["first"] = json.loads(json.dumps(table.slice(0, s["first_rows"]).to_pylist(), default=str))
            if s.get("same_as_parquet"):
                expected = classic(pq.read_table(s["same_as_parquet"]))
                got = classic(table)
                out["same"] = got.schema.names == expected.schema.names and all(
                    got.column(i).equals(expected.column(i)) for i in range(got.num_columns)
                )
                out["expected_rows"] = expected.num_rows
            return out
        if "ingest" in s:
            cur.adbc_ingest(s["ingest"], pa.table({"x": [1]}), mode="create")
            return {"ok": True}
        if "objects" in s:
            objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
            tables = []
            for catalog in objects:
                for schema in catalog["catalog_db_schemas"] or []:
                    for t in schema["db_schema_tables"] or []:
                        tables.append(f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{t["table_name"]}')
            return {"ok": True, "tables": tables}
        if "table_schema" in s:
            return {"ok": True, "columns": conn.adbc_get_table_schema(s["table_schema"]).names}
        return {"ok": False, "error": "plan", "message": f"unknown step {s}"}
    except Exception as e:  # every failure is an answer the test judges
        return error(e)
    finally:
        cur.close()


def main():
    plan = json.load(sys.stdin)
    try:
        conn = connect(plan)
    except Exception as e:
        print(json.dumps({"connect": error(e)}))
        return
    with conn:
        for s in plan["steps"]:
            print(json.dumps(step(plan, conn, s)), flush=True)


if __name__ == "__main__":
    main()
