#!/usr/bin/env python3
"""Draws a `crowsnest bench --soak` run: soak.csv -> a PNG of memory, threads, open files and
window groups over time, with the events decoded on a second axis.

Usage: plot_soak.py SOAK_CSV OUT_PNG [TITLE]   (needs `pip install matplotlib`)"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

path, out = sys.argv[1], sys.argv[2]
title = sys.argv[3] if len(sys.argv) > 3 else "crowsnest bench --soak"
rows = list(csv.DictReader(open(path)))
minutes = [float(r["seconds"]) / 60 for r in rows]
col = lambda name: [float(r[name]) for r in rows]

fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
panels = [
    ("rss_mb", "resident memory (MB)"),
    ("window_groups", "open window groups"),
    ("open_fds", "open file descriptors"),
    ("threads", "threads"),
]
for ax, (name, label) in zip(axes, panels):
    values = col(name)
    ax.plot(minutes, values, color="tab:blue")
    ax.set_ylabel(label)
    ax.set_ylim(bottom=0, top=max(values) * 1.25 + 1)
    ax.grid(alpha=0.3)
events = axes[0].twinx()
events.plot(minutes, [e / 1e6 for e in col("events")], color="tab:gray", linestyle="--")
events.set_ylabel("events decoded (M, dashed)")
axes[-1].set_xlabel("minutes")
last = rows[-1]
fig.suptitle(f"{title}\n{int(float(last['events'])):,} events, {int(float(last['dead_letters'])):,} dead letters, "
             f"{int(float(last['alerts'])):,} alerts")
fig.tight_layout()
fig.savefig(out, dpi=110)
print(f"wrote {out}")
