"""Kustomizations without kustomize: the files they name must exist, the ConfigMaps their
generators make, and which files under deploy/kubernetes they use at all.

Paths are relative to `root` (the repository); YAML comes through `load(path) -> [doc]`, which
reports a file that does not parse and returns [] for it.
"""
import os
from pathlib import Path

KEYS = {
    "apiVersion", "kind", "namespace", "namePrefix", "nameSuffix", "resources", "components",
    "configMapGenerator", "secretGenerator", "generatorOptions", "images", "labels", "commonLabels",
    "commonAnnotations", "patches", "replicas", "replacements", "buildMetadata", "sortOptions",
}
FILE = "kustomization.yaml"


class Kustomizations:
    """Walks kustomizations under one root; `used` collects every file they name."""

    def __init__(self, root, load, fail):
        self.root = Path(root)
        self.load = load
        self.fail = fail
        self.used = set()

    def normal(self, path):
        """`a/b/../c` as `a/c`, relative to the root."""
        return Path(os.path.relpath(os.path.normpath(self.root / path), self.root))

    def is_root(self, directory):
        """A Kustomization to build, not a Component (which only its users build)."""
        docs = self.load(self.root / directory / FILE)
        return bool(docs[:1]) and docs[0].get("kind", "Kustomization") == "Kustomization"

    def check(self, directory, seen=None):
        """Checks one kustomization and what it names; returns its raw objects as (doc, file)."""
        seen = set() if seen is None else seen
        path = directory / FILE
        if path in seen:
            return []
        seen.add(path)
        self.used.add(path)
        docs = self.load(self.root / path)
        if len(docs) != 1 or not isinstance(docs[0], dict):
            self.fail(path, "expected one mapping")
            return []
        k = docs[0]
        for key in sorted(set(k) - KEYS):
            self.fail(path, f"unknown key {key!r}")
        objects = []
        for entry in k.get("resources", []) + k.get("components", []):
            target = self.normal(directory / entry)
            if (self.root / target).is_dir():
                if not (self.root / target / FILE).is_file():
                    self.fail(path, f"{entry}: directory without {FILE}")
                    continue
                objects += self.check(target, seen)
            elif (self.root / target).is_file():
                self.used.add(target)
                objects += [(doc, target) for doc in self.load(self.root / target)]
            else:
                self.fail(path, f"{entry}: no such file or directory")
        for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            for entry in generator.get("files", []):
                source = self.normal(directory / entry.split("=", 1)[-1])
                if (self.root / source).is_file():
                    self.used.add(source)
                else:
                    self.fail(path, f"configMapGenerator {generator.get('name')}: {entry}: no such file")
        return objects

    def config_maps(self, directory, found=None):
        """The ConfigMaps a kustomization generates, name -> {key: text}: resources first, then its
        own generators, then its components (whose `behavior: merge` adds keys)."""
        found = {} if found is None else found
        k = self.load(self.root / directory / FILE)[0]
        for entry in k.get("resources", []):
            if (self.root / directory / entry).is_dir():
                self.config_maps(directory / entry, found)
        for generator in k.get("configMapGenerator", []):
            data = found.setdefault(generator["name"], {}) if generator.get("behavior") == "merge" else {}
            for entry in generator.get("files", []):
                key, _, source = entry.rpartition("=")
                if (self.root / directory / source).is_file():  # a missing one is reported by check
                    data[key or Path(source).name] = (self.root / directory / source).read_text()
            found[generator["name"]] = data
        for entry in k.get("components", []):
            self.config_maps(directory / entry, found)
        return found
