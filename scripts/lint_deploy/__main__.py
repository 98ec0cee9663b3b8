"""`python -m lint_deploy`, run by scripts/lint-deploy.sh in the repository's root with the
venv's python once the tools are installed: see checks.py for what it checks and its environment.
"""
import sys

from .report import crash

# Before the imports below: a failing import or schema build is reported as a FAIL line too.
sys.excepthook = crash

from .checks import main  # noqa: E402

raise SystemExit(main())
