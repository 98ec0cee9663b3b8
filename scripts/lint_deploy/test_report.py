"""One FAIL line per problem, however often it is found."""
import io
import unittest
from pathlib import Path

from .report import Report


class ReportTest(unittest.TestCase):
    def test_each_problem_once_in_order(self):
        out = io.StringIO()
        report = Report(out)
        report.fail(Path("a.yaml"), "bad")
        report.fail("b.yaml", "worse")
        report.fail("a.yaml", "bad")
        self.assertEqual(out.getvalue(), "FAIL a.yaml: bad\nFAIL b.yaml: worse\n")
        self.assertEqual(report.problems, 2)


if __name__ == "__main__":
    unittest.main()
