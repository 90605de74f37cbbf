"""Labels beside a fairseq audio manifest: ``<split>.label``, one line per clip line of
``<split>.tsv``, holding one class name, or several separated by commas (multi-label).
"""

import os
from typing import List, Sequence

from .manifest import ManifestError, read_manifest


class LabelError(ValueError):
    pass


def label_path_for(manifest_path) -> str:
    base, _ = os.path.splitext(str(manifest_path))
    return base + ".label"


def read_labels(manifest_path, label_path=None) -> List[List[str]]:
    """Class names of every clip of ``manifest_path``, in manifest order.

    Errors name the files: a missing label file, a line count that does not match the
    manifest's clip lines, an empty label line or an empty class name.
    """
    label_path = label_path or label_path_for(manifest_path)
    manifest = read_manifest(manifest_path)
    if not os.path.isfile(label_path):
        raise LabelError(f"no labels for {manifest_path}: {label_path} does not exist "
                         "(one line per clip, class names separated by commas)")
    with open(label_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != len(manifest):
        raise LabelError(
            f"{label_path} has {len(lines)} label lines but {manifest_path} lists "
            f"{len(manifest)} clips; the files must line up one to one"
        )
    labels = []
    for n, line in enumerate(lines, start=1):
        names = [c.strip() for c in line.split(",")]
        if not line.strip() or any(not c for c in names):
            raise LabelError(f"{label_path}:{n}: empty class name in {line!r}")
        labels.append(names)
    return labels


def write_labels(path, labels: Sequence[Sequence[str]]):
    with open(path, "w", encoding="utf-8") as f:
        for names in labels:
            for c in names:
                if "," in c or "\n" in c or not c.strip():
                    raise LabelError(f"class name {c!r} cannot be written to {path}")
            f.write(",".join(names) + "\n")


def class_index(labels: Sequence[Sequence[str]]):
    """Sorted class names and a {name: index} map."""
    names = sorted({c for row in labels for c in row})
    return names, {c: i for i, c in enumerate(names)}


__all__ = ["LabelError", "ManifestError", "read_labels", "write_labels", "label_path_for",
           "class_index"]
