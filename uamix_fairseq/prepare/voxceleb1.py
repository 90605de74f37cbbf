"""VoxCeleb1 speaker identification (``iden_split.txt``) -> train, valid, test labelled
with the speaker id (``id10001``).

``iden_split.txt`` lines are ``<set> <id>/<video>/<n>.wav`` with set 1 = train,
2 = valid, 3 = test. The audio is under ``SRC/wav`` by default; ``--audio-dir`` may be
given several times (e.g. the dev and test archives extracted apart): each listed clip
is taken from the first folder that has it, and the manifest root is then the
folders' common parent. Missing clips are counted and listed in
``missing_<split>.txt``; only a result without any clip is an error.
"""

import os
from typing import Dict, List, Optional, Sequence

from .core import Clip, Preparation, PrepareError, check_source_dir, check_source_file

NAME = "voxceleb1"
HELP = "VoxCeleb1 identification (iden_split.txt + wav/<id>/<video>/<n>.wav) -> train/valid/test"
SETS = {"1": "train", "2": "valid", "3": "test"}


def read_iden_split(path):
    """``[(split, "id10001/1zcIwhmdeo4/00001.wav"), ...]`` in file order."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[0] not in SETS or fields[1].count("/") < 1:
                raise PrepareError(
                    f"{path} line {number}: expected '<1|2|3> <id>/<video>/<n>.wav', "
                    f"found {line.strip()!r}"
                )
            rows.append((SETS[fields[0]], fields[1].replace("\\", "/")))
    if not rows:
        raise PrepareError(f"{path} is empty; expected lines like '1 id10001/1zcIwhmdeo4/00001.wav'")
    return rows


def prepare_voxceleb1(src, dest, audio_dirs: Optional[Sequence] = None,
                      split_file=None) -> Dict:
    """Args:
        src: the VoxCeleb1 folder (with ``iden_split.txt`` and, by default, ``wav/``).
        dest: output folder.
        audio_dirs: folders holding ``<id>/<video>/<n>.wav`` (default ``[src/wav]``).
        split_file: the split list (default ``src/iden_split.txt``).
    """
    src = check_source_dir(src, "VoxCeleb1 folder", "give the folder with iden_split.txt")
    split_file = check_source_file(split_file or os.path.join(src, "iden_split.txt"),
                                   "identification split list",
                                   "download iden_split.txt from the VoxCeleb1 page into SRC "
                                   "or pass --split-file")
    audio_dirs = [check_source_dir(d, "audio folder", "pass --audio-dir with the folder "
                                   "holding <id>/<video>/<n>.wav")
                  for d in (audio_dirs or [os.path.join(src, "wav")])]
    root = audio_dirs[0] if len(audio_dirs) == 1 else os.path.commonpath(audio_dirs)
    rows = read_iden_split(split_file)
    prep = Preparation(NAME, src, dest, root=root,
                       empty_hint=f"check that the audio folder(s) {', '.join(audio_dirs)} "
                                  "hold <id>/<video>/<n>.wav (use --audio-dir)")

    def locate(rel: str) -> Optional[str]:
        for folder in audio_dirs:
            path = os.path.join(folder, *rel.split("/"))
            if os.path.isfile(path):
                return path
        return None

    splits: Dict[str, List[Clip]] = {"train": [], "valid": [], "test": []}
    for split, rel in rows:
        splits[split].append(Clip(locate(rel), [rel.split("/")[0]], rel))
    for split, clips in splits.items():
        prep.add_split(split, clips)
    prep.extra["speakers_listed"] = len({clip.labels[0] for c in splits.values() for clip in c})
    return prep.finish()


def add_arguments(parser):
    parser.add_argument("--audio-dir", action="append", default=None,
                        help="folder holding <id>/<video>/<n>.wav (default: SRC/wav); give it "
                             "more than once for audio extracted in several places")
    parser.add_argument("--split-file", default=None,
                        help="identification split list (default: SRC/iden_split.txt)")


def run(args) -> Dict:
    return prepare_voxceleb1(args.src, args.dest, audio_dirs=args.audio_dir,
                             split_file=args.split_file)
