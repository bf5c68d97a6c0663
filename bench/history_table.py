#!/usr/bin/env python3
"""Markdown tables from `crowsnest bench --record FILE` history.

    python3 bench/history_table.py bench/history.jsonl [MODE ...]

For each distinct bench command (of the given modes; all by default), the figures of its
latest run: the README's tables are pasted from this output, so they are measurements, not
typing.
"""
import json
import re
import sys


def command(run):
    """The bench command, without where its figures were recorded."""
    return re.sub(r"\s*--record(=|\s+)\S+", "", run["args"]).strip()


def fmt(value, unit):
    if unit in ("events/s", "rows/s", "groups", "alerts", "bytes"):
        return f"{value:,.0f}"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "fraction":
        return f"{value * 100:.1f} %"
    if unit == "ms":
        return f"{value:.1f}"
    return f"{value:g}"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    modes = sys.argv[2:] or sorted({r["mode"] for r in runs})
    latest = {}
    for r in runs:
        if r["mode"] in modes:
            latest[command(r)] = r
    for cmd, latest in latest.items():
        label = lambda r: f"{r['commit']}{'+' if r.get('dirty') else ''} {r['at'][:10]}"
        print(f"\n#### `crowsnest {cmd}` ({latest['cores']} cores)\n")
        print(f"| figure | unit | {label(latest)} |")
        print("| --- | --- | ---: |")
        for f in latest["figures"]:
            print(f"| {f['name']} | {f['unit']} | {fmt(f['value'], f['unit'])} |")


if __name__ == "__main__":
    main()
