#!/usr/bin/env python3
"""Serves NAB series as live Prometheus metrics, continuing where a backfill ended.

Each FILE.csv:ROW is served as `nab_value{dataset="<file stem>"}`: at START (Unix seconds) it
shows row ROW + 1, and it moves one row further every interval of the file's own sampling
(5 or 30 minutes), so a backfill that ended at START with row ROW continues seamlessly.
Usage: nab_replay.py --port 9101 --start TS FILE.csv:ROW...
"""
import argparse
import csv
import datetime
import http.server
import time


def load(spec):
    path, _, row = spec.partition(":")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    parse = lambda s: datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S").timestamp()
    step = parse(rows[1][0]) - parse(rows[0][0])
    name = path.rsplit("/", 1)[-1].removesuffix(".csv")
    return name, [r[1] for r in rows], int(row), step


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    series = [load(spec) for spec in args.files]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            lines = ["# HELP nab_value NAB benchmark series, replayed.", "# TYPE nab_value gauge"]
            for name, values, row, step in series:
                i = min(row + 1 + int((time.time() - args.start) // step), len(values) - 1)
                lines.append(f'nab_value{{dataset="{name}"}} {values[i]}')
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
