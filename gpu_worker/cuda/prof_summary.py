#!/usr/bin/env python3
"""Sums an ncu --csv log of gpu__time_duration per kernel name, over the launches after the
last `--after N` launches are skipped (default: all). Prints name, launches, total µs, share."""
import csv, sys, collections

def main():
    path = sys.argv[1]
    skip = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    rows = [l for l in open(path, errors="replace") if l.startswith('"')]
    rd = csv.DictReader(rows)
    seq = []
    for r in rd:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        seq.append((int(r["ID"]), r["Kernel Name"].split("(")[0], float(r["Metric Value"].replace(",", ""))))
    seq = seq[skip:]
    tot = collections.defaultdict(lambda: [0, 0.0])
    for _, n, t in seq:
        tot[n][0] += 1
        tot[n][1] += t
    all_ns = sum(v[1] for v in tot.values())
    print(f"{len(seq)} launches, {all_ns/1e3:.1f} us")
    for n, (c, t) in sorted(tot.items(), key=lambda kv: -kv[1][1]):
        print(f"{t/1e3:10.1f} us {100*t/all_ns:5.1f}% {c:6d}  {t/c/1e3:8.2f} us/launch  {n[:90]}")

main()
