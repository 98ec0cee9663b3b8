"""Problems found by the checks: one `FAIL <where>: <problem>` line each, printed once."""
import sys
import traceback


class Report:
    """Prints each problem once, as it is found, and counts them; `problems` decides the exit code."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.failures = []  # (where, msg) in the order found, each once

    def fail(self, where, msg):
        if (str(where), msg) not in self.failures:
            self.failures.append((str(where), msg))
            print(f"FAIL {where}: {msg}", file=self.out)

    @property
    def problems(self):
        return len(self.failures)


def crash(kind, value, tb):
    """`sys.excepthook`: a bug in the checks is a failure too, with its traceback."""
    traceback.print_exception(kind, value, tb)
    print(f"FAIL scripts/lint_deploy: the checks stopped on {kind.__name__}: {value}")
    raise SystemExit(1)
