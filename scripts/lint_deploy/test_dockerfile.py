"""The Dockerfile's instructions, its COPY sources against the build context the .dockerignore
leaves, and the image's files rebuilt from the final stage."""
import io
import tempfile
import unittest
from pathlib import Path

from . import dockerfile
from .report import Report

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION} AS build
COPY Cargo.toml /src/
RUN cargo build \\
    && install target/release/app /out/app
COPY --from=build /out/app /usr/local/bin/

FROM distroless
COPY --chown=65532 etc/app.yml /etc/app/app.yml
COPY ["etc/rules/", "/etc/app/rules/"]
COPY etc/app.yml /etc/app/
COPY secrets.env /etc/app/
COPY gone.yml /etc/app/
CMD ["--config.file=/etc/app/app.yml", "--verbose"]
"""


class InstructionsTest(unittest.TestCase):
    def test_continuations_joined_comments_and_blank_lines_dropped(self):
        steps = dockerfile.instructions(DOCKERFILE)
        self.assertEqual([op for op, _ in steps],
                         ["ARG", "FROM", "COPY", "RUN", "COPY", "FROM", "COPY", "COPY", "COPY", "COPY", "COPY", "CMD"])
        self.assertEqual(steps[3], ("RUN", "cargo build && install target/release/app /out/app"))

    def test_command(self):
        steps = dockerfile.instructions(DOCKERFILE)
        self.assertEqual(dockerfile.command(steps), (["--config.file=/etc/app/app.yml", "--verbose"],
                                                     {"--config.file": "/etc/app/app.yml"}))

    def test_ignore_patterns(self):
        text = "# allowlist\n*\n\n!Cargo.toml\n  !src/  \n!deploy/docker/\n"
        self.assertEqual(dockerfile.ignore_patterns(text), ["*", "!Cargo.toml", "!src/", "!deploy/docker/"])


class ImageTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name) / "repo"
        self.image = Path(tmp.name) / "image"
        for path in ["Cargo.toml", "etc/app.yml", "etc/rules/a.yaml", "etc/rules/sub/b.yaml", "secrets.env"]:
            (self.root / path).parent.mkdir(parents=True, exist_ok=True)
            (self.root / path).write_text(path)

    def test_sources_must_exist_and_be_in_the_context_and_the_final_stage_is_laid_out(self):
        # secrets.env exists but the .dockerignore leaves it out of the context.
        context = {"Cargo.toml", "etc", "etc/app.yml", "etc/rules", "etc/rules/a.yaml", "etc/rules/sub",
                   "etc/rules/sub/b.yaml"}
        report = Report(io.StringIO())
        dockerfile.copy_into_image(dockerfile.instructions(DOCKERFILE), self.root, context, self.image, report.fail)
        self.assertEqual(report.failures, [(".dockerignore", "excludes secrets.env, which the Dockerfile copies"),
                                           ("Dockerfile", "COPY gone.yml: no such file or directory")])
        files = sorted(str(p.relative_to(self.image)) for p in self.image.rglob("*") if p.is_file())
        # Not Cargo.toml: the build stage's files are not in the image.
        self.assertEqual(files, ["etc/app/app.yml", "etc/app/rules/a.yaml", "etc/app/rules/sub/b.yaml"])


if __name__ == "__main__":
    unittest.main()
