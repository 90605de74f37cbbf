"""A folder per class (``SRC/<class>/**/*.wav``) -> train/valid(/test) with labels.

The split is stratified: each class is split on its own, with a generator seeded from
``seed`` and the class name, so every class with enough clips is in every split, and
adding a class does not move the clips of the others.
"""

import os
import zlib
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .core import (DEFAULT_EXTENSIONS, Clip, Preparation, PrepareError, check_source_dir,
                   find_files, normalise_extensions)

NAME = "folder"
HELP = "a folder per class (SRC/<class>/**/*.wav|flac|ogg) -> stratified train/valid(/test)"


def split_counts(n: int, valid_fraction: float, test_fraction: float) -> Tuple[int, int]:
    """``(n_valid, n_test)`` for a class of ``n`` clips.

    Each asked-for split gets ``round(fraction * n)`` clips but at least one, while
    train keeps at least one; when clips run short, train is served first, then valid,
    then test.
    """
    want_valid = max(1, int(n * valid_fraction + 0.5)) if valid_fraction > 0 else 0
    want_test = max(1, int(n * test_fraction + 0.5)) if test_fraction > 0 else 0
    room = max(n - 1, 0)
    n_valid = min(1, want_valid, room)
    room -= n_valid
    n_test = min(1, want_test, room)
    room -= n_test
    more = min(want_valid - n_valid, room)
    n_valid += more
    room -= more
    n_test += min(want_test - n_test, room)
    return n_valid, n_test


def stratified_split(by_class: Dict[str, Sequence[str]], valid_fraction: float,
                     test_fraction: float, seed: int) -> Dict[str, List[Tuple[str, str]]]:
    """``{"train"|"valid"|"test": [(path, class), ...]}``, each sorted by path."""
    out = {"train": [], "valid": [], "test": []}
    for name in sorted(by_class):
        paths = sorted(by_class[name])
        n_valid, n_test = split_counts(len(paths), valid_fraction, test_fraction)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
        order = rng.permutation(len(paths))
        for split, idx in (("valid", order[:n_valid]),
                           ("test", order[n_valid:n_valid + n_test]),
                           ("train", order[n_valid + n_test:])):
            out[split].extend((paths[i], name) for i in idx)
    return {k: sorted(v) for k, v in out.items()}


def prepare_folder(src, dest, valid_fraction: float = 0.1, test_fraction: float = 0.0,
                   seed: int = 42, extensions=DEFAULT_EXTENSIONS) -> Dict:
    """Write ``train``, ``valid`` (and with ``test_fraction > 0`` ``test``) manifests and
    labels for ``src/<class>/**/<audio>``; the class is the top-level folder name."""
    src = check_source_dir(src, "class folder tree", "give the folder holding one "
                           "sub-folder per class")
    for what, value in (("--valid-percent", valid_fraction), ("--test-percent", test_fraction)):
        if not 0 <= value < 1:
            raise PrepareError(f"{what}={value} is outside [0, 1); it is a fraction "
                               "(0.1 = 10% of each class)")
    if valid_fraction + test_fraction >= 1:
        raise PrepareError(f"--valid-percent + --test-percent = {valid_fraction + test_fraction} "
                           "leaves nothing for train; make their sum less than 1")
    if seed < 0:
        raise PrepareError(f"--seed={seed}: use a non-negative seed")
    exts = normalise_extensions(extensions)
    prep = Preparation(NAME, src, dest, root=src, empty_hint="check SRC and --ext")

    by_class: Dict[str, List[str]] = {}
    for rel_path in find_files(src, exts):
        parts = rel_path.split(os.sep)
        if len(parts) == 1:
            prep.skip(rel_path, "not inside a class folder")
            continue
        by_class.setdefault(parts[0], []).append(rel_path)
    if not by_class:
        raise PrepareError(f"folder: no files with extensions {', '.join(exts)} inside class "
                           f"folders of {src}; expected SRC/<class>/<file> (check SRC and --ext)")

    readable = {}
    for name, paths in by_class.items():
        ok = prep.readable([os.path.join(src, p) for p in paths])
        if ok:
            readable[name] = ok
        else:
            prep.warn(f"class {name!r}: none of its {len(paths)} file(s) is readable; left out")
    splits = stratified_split(readable, valid_fraction, test_fraction, seed)

    wanted = {"valid": valid_fraction > 0, "test": test_fraction > 0}
    short = [name for name, paths in sorted(readable.items())
             if len(paths) < 1 + sum(wanted.values())]
    if short:
        prep.warn(f"{len(short)} class(es) have too few clips to appear in every split "
                  f"(train first, then valid, then test): {', '.join(short[:20])}"
                  + (" ..." if len(short) > 20 else ""))
    for split in ("train", "valid", "test"):
        if split != "train" and not wanted[split]:
            continue
        prep.add_split(split, [Clip(path, [name], os.path.relpath(path, src))
                               for path, name in splits[split]])
    prep.extra["split"] = {"valid_fraction": valid_fraction, "test_fraction": test_fraction,
                           "seed": seed, "stratified_by": "class folder"}
    return prep.finish()


def add_arguments(parser):
    parser.add_argument("--valid-percent", type=float, default=0.1,
                        help="fraction in [0, 1) of each class put in valid (0.1 = 10%%; "
                             "default: 0.1)")
    parser.add_argument("--test-percent", type=float, default=0.0,
                        help="fraction in [0, 1) of each class put in test; 0 writes no "
                             "test split (default: 0)")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the split; the same seed gives the same split "
                             "(default: 42)")
    parser.add_argument("--ext", default=",".join(DEFAULT_EXTENSIONS),
                        help="comma-separated audio extensions, case-insensitive "
                             "(default: wav,flac,ogg)")


def run(args) -> Dict:
    return prepare_folder(args.src, args.dest, valid_fraction=args.valid_percent,
                          test_fraction=args.test_percent, seed=args.seed, extensions=args.ext)
