#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (fuzz/corpus/TARGET/) from what the project ships: the
bundled AKS sample, the rule pack and lists, the Sigma fixtures, the example configs and the
URL forms the README documents. Run from anywhere; rerunning rewrites the seeds."""
import gzip, hashlib, json, pathlib, random

root = pathlib.Path(__file__).resolve().parent.parent
corpus = root / "fuzz" / "corpus"
rng = random.Random(7)


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


lines = gzip.open(root / "pipeline/samples/aks-sample.jsonl.gz").read().splitlines()
for line in rng.sample(lines, 150):
    put("decoder", line)
events = []
for line in lines:
    for rec in json.loads(line).get("records", []):
        log = rec.get("properties", {}).get("log")
        if isinstance(log, str) and log.startswith("{"):
            events.append(log)
for ev in rng.sample(events, 150):
    put("scanner", ev)
    put("scanner", json.dumps(ev))  # as a string literal, for the unescaper
    e = json.loads(ev)
    # The other forms audit logs are kept in: a bare Event, an EventList, a Log Analytics row.
    put("decoder", ev)
    put("decoder", json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [e]}, indent=2))
    put("decoder", json.dumps({"category": "kube-audit", "resourceId": "/C", "properties": {"log": ev}}))
    put("decoder", json.dumps({"Type": "AzureDiagnostics", "Category": "kube-audit", "log_s": ev}))
    put("decoder", json.dumps({"Type": "AKSAudit", "AuditId": e.get("auditID"), "Verb": e.get("verb"),
                               "User": json.dumps(e.get("user")), "TimeGenerated": e.get("requestReceivedTimestamp")}))
for i in range(20):
    start = rng.randrange(len(lines) - 10)
    block = b"\n".join(lines[start:start + rng.randrange(1, 10)])
    put("framing", bytes([rng.randrange(256)]) + block)
    put("framing", bytes([rng.randrange(256)]) + b"\r\n".join(lines[start:start + 3]) + b"\n\n")
put("framing", b"\x05" + json.dumps([json.loads(l) for l in lines[:3]], indent=2).encode())
put("framing", b"\x41" + b"\xef\xbb\xbf" + lines[0])

for p in [root / "crowsnest.example.toml", *root.glob("dashboards/*.toml")]:
    put("config", p.read_bytes())

for p in [*root.glob("detections/rules/*.yaml"), *root.glob("detections/lists/*.yaml"), *root.glob("tests/fixtures/sigma/**/*.yml")]:
    put("rules", p.read_bytes())

for u in ["stdin", "-", "stdout", "file:///var/log/audit.jsonl?follow=true", "audit.jsonl",
          "kafka://localhost:9092/aks-audit?group=crowsnest&start=earliest&commit_interval=5s",
          "kafka://ns.servicebus.windows.net:9093/insights,aks-audit?preset=eventhubs&password_env=EH_CONN",
          "kafka://b1:9092,b2:9092/alerts?linger.ms=5&compression.type=zstd",
          "sentinel://dce.westeurope-1.ingest.monitor.azure.com?dcr=dcr-0123456789abcdef&stream=Custom-CrowsnestAlert&auth=workload",
          "sentinel://127.0.0.1:8443?dcr=dcr-1&stream=Custom-CrowsnestAlert&auth=secret&tenant=t&client=c&secret_env=S",
          "az://lake/crowsnest?account=acct&use_azure_cli=true", "abfss://lake@acct.dfs.core.windows.net/x",
          "file:///tmp/lake", "/var/lib/crowsnest/lake", "a%20b+c%2Cd", "%E2%9C%93"]:
    put("urls", u)
