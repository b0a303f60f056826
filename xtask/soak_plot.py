#!/usr/bin/env python3
"""Plots a soak run's samples (the CSV `cargo xtask soak` writes next to its
JSON report): server RSS and the delivery rate the clients saw, over time.

    pip install matplotlib
    python3 xtask/soak_plot.py target/soak/<stamp>-single.csv docs/soak/single-30min.png

One line per process for RSS (Redis included in cluster mode), and the
clients' received messages per second (summed over the samples of one
moment). Only the load phase is drawn.
"""

import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: soak_plot.py SAMPLES.csv OUT.png")
    src, out = sys.argv[1], sys.argv[2]
    rss = defaultdict(list)
    rate = {}
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            if row["phase"] != "Load":
                continue
            t = float(row["t_s"]) / 60.0
            rss[row["process"]].append((t, int(row["rss_kib"]) / 1024.0))
            per_s = row.get("client_received_per_s", "NaN")
            if per_s not in ("", "NaN"):
                rate[t] = float(per_s)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, points in sorted(rss.items()):
        xs, ys = zip(*points)
        top.plot(xs, ys, label=name, linewidth=1)
    top.set_ylabel("RSS (MiB)")
    top.set_ylim(bottom=0)
    top.legend(loc="lower right")
    top.grid(alpha=0.3)
    if rate:
        xs = sorted(rate)
        bottom.plot(xs, [rate[x] for x in xs], color="tab:green", linewidth=1)
    bottom.set_ylabel("messages received / s")
    bottom.set_xlabel("minutes of load")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    fig.suptitle(src.rsplit("/", 1)[-1])
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
