#!/usr/bin/env python3
"""A stand-in notification channel for the demo: an Alertmanager webhook receiver on loopback
that prints one line per alert in each notification it gets. Standard library only."""
import argparse
import json
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        for alert in body.get("alerts", []):
            labels = alert.get("labels", {})
            rest = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())
                            if k not in ("alertname", "severity"))
            print(f'{alert.get("startsAt", "")} receiver={body.get("receiver")} '
                  f'status={alert.get("status")} {labels.get("alertname")} '
                  f'severity={labels.get("severity")} {{{rest}}}', flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9095)
    args = parser.parse_args()
    HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
