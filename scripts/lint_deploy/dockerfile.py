"""The Dockerfile without a Docker engine: its instructions, the build context its
.dockerignore leaves, and the image's files rebuilt from the final stage's COPY lines.

Which paths the .dockerignore keeps is docker-py's business (`context` comes in as a set of
paths relative to the build root); what is checked here is that every COPY source exists and
is among them.
"""
import json
import shutil
from pathlib import Path


def instructions(text):
    """(INSTRUCTION, arguments) per Dockerfile instruction: continuations joined, comments and
    blank lines dropped."""
    lines, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def ignore_patterns(text):
    """The patterns of a .dockerignore: one a line, blank lines and comments dropped."""
    return [p.strip() for p in text.splitlines() if p.strip() and not p.startswith("#")]


def copy_into_image(steps, root, context, image_root, fail, dockerfile="Dockerfile"):
    """Checks the sources of every COPY/ADD from the build context (not `--from=` a stage), and
    copies those of the final stage with an absolute destination under `image_root`."""
    root = Path(root)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    for i, (op, rest) in enumerate(steps):
        if op not in ("COPY", "ADD"):
            continue
        words = json.loads(rest) if rest.startswith("[") else rest.split()
        if any(w.startswith("--from=") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources, dest = words[:-1], words[-1]
        for source in sources:
            source = source.rstrip("/")
            if not (root / source).exists():
                fail(dockerfile, f"{op} {source}: no such file or directory")
            elif source not in context:
                fail(".dockerignore", f"excludes {source}, which the Dockerfile copies")
            elif i > last_from and dest.startswith("/"):
                target = Path(image_root) / dest.lstrip("/")
                if (root / source).is_dir():
                    shutil.copytree(root / source, target, dirs_exist_ok=True)
                else:
                    target = target / Path(source).name if dest.endswith("/") else target
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(root / source, target)


def command(steps):
    """The last CMD (exec form) and its `--flag=value` arguments as a dict."""
    cmd = json.loads(next(rest for op, rest in reversed(steps) if op == "CMD"))
    return cmd, dict(a.split("=", 1) for a in cmd if "=" in a)
