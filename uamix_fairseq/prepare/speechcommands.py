"""Speech Commands (v2: 35 words; v1 works the same way) -> train, valid, test.

Layout: ``SRC/<word>/<speaker>_nohash_<n>.wav`` with ``SRC/validation_list.txt`` and
``SRC/testing_list.txt`` listing paths relative to ``SRC`` (``right/a1b2c3d4_nohash_0.wav``).
valid and test are the listed clips, in list order; train is every other clip of a
word folder, sorted by path. Folders starting with ``_`` (``_background_noise_``) are
not words and are left out. The label is the word (the folder name).
"""

import os
from typing import Dict, List

from .core import Clip, Preparation, PrepareError, check_source_dir, check_source_file, find_files

NAME = "speechcommands"
HELP = "Speech Commands v2 (SRC/<word>/*.wav + validation_list.txt/testing_list.txt) -> train/valid/test"
LISTS = {"valid": "validation_list.txt", "test": "testing_list.txt"}


def read_list(path) -> List[str]:
    """Relative paths of a split list, normalised to ``word/file.wav``, blank lines dropped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            entry = line.strip().replace("\\", "/")
            if entry.startswith("./"):
                entry = entry[2:]
            if not entry:
                continue
            if entry.count("/") != 1:
                raise PrepareError(f"{path} line {number}: expected word/file.wav, found {entry!r}")
            out.append(entry)
    return out


def prepare_speechcommands(src, dest) -> Dict:
    src = check_source_dir(src, "Speech Commands folder",
                           "give the extracted speech_commands_v0.02 folder")
    lists = {split: read_list(check_source_file(os.path.join(src, name), "split list",
                                                "it comes with the Speech Commands archive"))
             for split, name in LISTS.items()}
    prep = Preparation(NAME, src, dest, root=src)

    words, excluded = [], {}
    for entry in sorted(os.listdir(src)):
        if not os.path.isdir(os.path.join(src, entry)) or entry.startswith("."):
            continue
        if entry.startswith("_"):
            excluded[entry] = len(find_files(os.path.join(src, entry), (".wav",)))
        else:
            words.append(entry)
    if not words:
        raise PrepareError(f"speechcommands: no word folders in {src}; expected SRC/<word>/*.wav")

    in_test = set(lists["test"])
    both = [p for p in lists["valid"] if p in in_test]
    if both:
        prep.warn(f"{len(both)} clip(s) are in both {LISTS['valid']} and {LISTS['test']} "
                  f"(e.g. {both[0]}); they are kept in test only")
    listed = set(lists["valid"]) | in_test

    def clip(rel):
        word = rel.split("/")[0]
        if word.startswith("_"):
            prep.skip(rel, "listed clip in an excluded folder")
            return None
        return Clip(os.path.join(src, *rel.split("/")), [word], rel)

    train = []
    for word in words:
        for name in find_files(os.path.join(src, word), (".wav",)):
            rel = f"{word}/{name.replace(os.sep, '/')}"
            if rel not in listed:
                train.append(Clip(os.path.join(src, word, name), [word], rel))
    prep.add_split("train", sorted(train, key=lambda c: c.ref))
    valid = [clip(p) for p in lists["valid"] if p not in in_test]
    prep.add_split("valid", [c for c in valid if c is not None])
    test = [clip(p) for p in lists["test"]]
    prep.add_split("test", [c for c in test if c is not None])
    prep.extra["words"] = len(words)
    prep.extra["excluded_folders"] = excluded
    if len(words) not in (30, 35):
        prep.warn(f"{len(words)} word folders found; Speech Commands v2 has 35 (v1: 30)")
    return prep.finish()


def add_arguments(parser):
    pass


def run(args) -> Dict:
    return prepare_speechcommands(args.src, args.dest)
