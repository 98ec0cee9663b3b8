#!/usr/bin/env python3
"""Writes NAB CSVs as OpenMetrics for `promtool tsdb create-blocks-from openmetrics`.

Each series becomes `nab_value{dataset="<file stem>"}`, shifted so that its last sample is at
END (Unix seconds, default now): never later, since a future sample makes Prometheus drop the
scrapes that follow it. Usage: nab_to_openmetrics.py [--end TS] FILE.csv[:LAST_ROW][:ROWS]...
"""
import argparse
import csv
import datetime
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--end", type=int, default=int(time.time()))
    parser.add_argument("--labels", default="", help='extra labels, e.g. job="nab",instance="127.0.0.1:9101"')
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    out = sys.stdout
    out.write("# HELP nab_value NAB benchmark series.\n# TYPE nab_value gauge\n")
    for spec in args.files:
        path, _, rest = spec.partition(":")
        last, _, keep = rest.partition(":")
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1:]
        if last:
            rows = rows[: int(last) + 1]
        if keep:
            rows = rows[-int(keep):]
        parse = lambda s: datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
        shift = args.end - parse(rows[-1][0])
        name = path.rsplit("/", 1)[-1].removesuffix(".csv")
        previous = None
        for stamp, value in rows:
            ts = int(parse(stamp) + shift)
            if previous is not None and ts <= previous:
                continue  # NAB has a few repeated timestamps; keep the first
            previous = ts
            extra = f",{args.labels}" if args.labels else ""
            out.write(f'nab_value{{dataset="{name}"{extra}}} {value} {ts}\n')
    out.write("# EOF\n")


if __name__ == "__main__":
    main()
