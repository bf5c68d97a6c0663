#!/usr/bin/env python3
"""DuckDB on the same input as `crowsnest bench`: load AKS envelope lines, unnest the records,
parse each properties.log audit Event, and run SQL comparable to the bundled rules (single-event
filters plus two windowed thresholds). Prints `seconds N` for the bench to read.
Needs `pip install duckdb`."""
import sys
import time

import duckdb

path = sys.argv[1]
con = duckdb.connect()
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
con.execute(f"SET threads TO {threads}")  # 1: the yardstick is one core
t = time.perf_counter()
con.execute(f"""
CREATE TABLE ev AS
SELECT r.category AS category, r.resourceId AS cluster, r.properties.log::JSON AS e
FROM (SELECT unnest(records) AS r FROM read_json('{path}', format='newline_delimited',
      columns={{records: 'STRUCT(category VARCHAR, resourceId VARCHAR, properties STRUCT(log VARCHAR))[]'}}))
WHERE r.category IN ('kube-audit', 'kube-audit-admin', 'guard') AND r.properties.log LIKE '{{%'
""")
con.execute("""
CREATE TABLE a AS SELECT
  (e->>'auditID') AS audit_id, (e->>'verb') AS verb, (e->>'$.user.username') AS user_name,
  (e->>'$.objectRef.resource') AS resource, (e->>'$.objectRef.subresource') AS subresource,
  (e->>'$.objectRef.namespace') AS namespace, (e->>'$.responseStatus.code')::INT AS code,
  (e->>'requestReceivedTimestamp')::TIMESTAMP AS event_time, e->'requestObject' AS req
FROM ev
""")
n = con.execute("SELECT count(*) FROM a").fetchone()[0]
q = [
  "SELECT count(*) FROM a WHERE verb='create' AND resource='pods' AND req::VARCHAR LIKE '%\"privileged\":true%'",
  "SELECT count(*) FROM a WHERE resource='pods' AND subresource IN ('exec','attach')",
  "SELECT count(*) FROM a WHERE resource IN ('clusterrolebindings','rolebindings') AND (req->>'$.roleRef.name')='cluster-admin'",
  "SELECT count(*) FROM a WHERE user_name='system:anonymous' AND code < 400",
  "SELECT count(*) FROM (SELECT user_name FROM a WHERE code=403 GROUP BY user_name, time_bucket(INTERVAL 5 MINUTE, event_time) HAVING count(*) >= 20)",
  "SELECT count(*) FROM (SELECT user_name FROM a WHERE resource='secrets' AND verb IN ('get','list','watch') GROUP BY user_name, time_bucket(INTERVAL 10 MINUTE, event_time) HAVING count(DISTINCT namespace) >= 5)",
]
for s in q:
    con.execute(s).fetchall()
print(f"events {n}")
print(f"seconds {time.perf_counter() - t:.3f}")
