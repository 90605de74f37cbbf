"""Tests of uamix_fairseq.prepare: each converter on a tiny fake copy of its dataset's
real layout and file names, with short generated audio."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from uamix_fairseq.labels import read_labels
from uamix_fairseq.manifest import read_manifest
from uamix_fairseq.prepare import (PrepareError, prepare_audioset, prepare_esc50, prepare_folder,
                                   prepare_speechcommands, prepare_voxceleb1)
from uamix_fairseq.prepare.cli import main
from uamix_fairseq.prepare.folder import split_counts

_RNG = np.random.default_rng(0)


def _wav(path, seconds=0.1, rate=16000, frames=None):
    """Write a short noise clip; returns its frame count."""
    frames = frames or int(round(seconds * rate))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, 0.1 * _RNG.standard_normal(frames).astype(np.float32), rate)
    return frames


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _clips(dest, split):
    """``[(relative path, size, labels), ...]`` of a written split, checking the pairing."""
    manifest = read_manifest(os.path.join(dest, f"{split}.tsv"))
    labels = read_labels(os.path.join(dest, f"{split}.tsv"))
    assert len(labels) == len(manifest)
    return list(zip(manifest.paths, manifest.sizes, labels))


# ---------------------------------------------------------------------------
# folder
# ---------------------------------------------------------------------------


def _class_tree(root, sizes=None):
    sizes = sizes or {"cat": 9, "dog": 10, "owl": 1}
    for name, n in sizes.items():
        for i in range(n):
            sub = "deep/er" if i % 3 == 0 else ""  # recursive search
            _wav(os.path.join(root, name, sub, f"{name}{i:02d}.wav"), frames=1600 + i)
    return sizes


def test_split_counts():
    assert split_counts(10, 0.1, 0.1) == (1, 1)
    assert split_counts(9, 0.2, 0.1) == (2, 1)
    assert split_counts(3, 0.5, 0.5) == (1, 1)  # everyone gets one before anyone gets two
    assert split_counts(2, 0.1, 0.1) == (1, 0)  # train first, then valid, then test
    assert split_counts(1, 0.5, 0.0) == (0, 0)
    assert split_counts(100, 0.0, 0.0) == (0, 0)


def test_folder_stratified_split(tmp_path):
    src = tmp_path / "src"
    _class_tree(str(src))
    (src / "cat" / "broken.wav").write_bytes(b"not audio at all" * 10)
    _wav(str(src / "stray.wav"))
    (src / "dog" / "notes.txt").write_text("not audio")
    dest = tmp_path / "out"
    summary = prepare_folder(src, dest, valid_fraction=0.2, test_fraction=0.1, seed=3)

    splits = {s: _clips(str(dest), s) for s in ("train", "valid", "test")}
    assert read_manifest(str(dest / "train.tsv")).root == str(src)
    for clips in splits.values():
        for rel, size, labels in clips:
            assert labels == [rel.split("/")[0]]  # label = class folder
            assert size == 1600 + int(os.path.basename(rel)[3:5])  # exact frame counts
        assert [c[0] for c in clips] == sorted(c[0] for c in clips)
    per_class = {s: sorted(c[2][0] for c in clips) for s, clips in splits.items()}
    assert per_class["valid"] == ["cat"] * 2 + ["dog"] * 2  # round(0.2 * 9), round(0.2 * 10)
    assert per_class["test"] == ["cat", "dog"]
    assert per_class["train"].count("owl") == 1  # one clip: train only, with a warning
    everything = [c[0] for clips in splits.values() for c in clips]
    assert len(everything) == len(set(everything)) == 20  # disjoint, nothing lost
    assert "broken.wav" not in " ".join(everything) and "stray.wav" not in everything

    assert summary["splits"]["train"]["clips"] == 14
    assert summary["splits"]["valid"]["classes"] == 2
    assert summary["num_classes"] == 3 and summary["classes"] == ["cat", "dog", "owl"]
    assert summary["skipped"]["by_reason"] == {"not inside a class folder": 1, "unreadable": 1}
    assert {e["path"] for e in summary["skipped"]["examples"]} == {"stray.wav", "cat/broken.wav"}
    assert summary["sample_rates"] == {"16000": 20}  # the stray file is never probed
    assert any("owl" in w and "too few" in w for w in summary["warnings"])
    assert not any("task.resample" in w for w in summary["warnings"])


def test_folder_split_is_seeded_and_per_class(tmp_path):
    src = tmp_path / "src"
    _class_tree(str(src), {"cat": 12, "dog": 12})
    prepare_folder(src, tmp_path / "a", valid_fraction=0.25, seed=7)
    prepare_folder(src, tmp_path / "b", valid_fraction=0.25, seed=7)
    prepare_folder(src, tmp_path / "c", valid_fraction=0.25, seed=8)
    for name in ("train.tsv", "train.label", "valid.tsv", "valid.label"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert (tmp_path / "a" / "valid.tsv").read_text() != (tmp_path / "c" / "valid.tsv").read_text()
    assert not (tmp_path / "a" / "test.tsv").exists()  # no test split asked for
    # Adding a class leaves the other classes' split alone.
    _class_tree(str(src), {"eel": 5})
    prepare_folder(src, tmp_path / "d", valid_fraction=0.25, seed=7)
    valid_a = [c for c in _clips(str(tmp_path / "a"), "valid")]
    valid_d = [c for c in _clips(str(tmp_path / "d"), "valid") if c[2] != ["eel"]]
    assert valid_a == valid_d


def test_folder_errors(tmp_path):
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_folder(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "x.mp3").write_bytes(b"")
    with pytest.raises(PrepareError, match="no files with extensions .wav"):
        prepare_folder(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "bad" / "cat").mkdir(parents=True)
    (tmp_path / "bad" / "cat" / "x.wav").write_bytes(b"garbage" * 20)
    with pytest.raises(PrepareError, match=r"no usable clips .*1 skipped.*nothing was written"):
        prepare_folder(tmp_path / "bad", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _wav(str(tmp_path / "comma" / "a,b" / "x.wav"))
    _wav(str(tmp_path / "comma" / "a,b" / "y.wav"))
    with pytest.raises(PrepareError, match="contains a comma"):
        prepare_folder(tmp_path / "comma", tmp_path / "out")
    with pytest.raises(PrepareError, match="leaves nothing for train"):
        prepare_folder(tmp_path / "comma", tmp_path / "out", valid_fraction=0.5,
                       test_fraction=0.5)


# ---------------------------------------------------------------------------
# ESC-50
# ---------------------------------------------------------------------------

ESC_HEADER = "filename,fold,target,category,esc10,src_file,take"
ESC_CATEGORIES = {0: ("dog", True), 19: ("thunderstorm", False), 37: ("clock_alarm", False)}


def _esc50(root, per_fold=2):
    """A fake ESC-50-master: rows named like the real ones, 44.1 kHz audio."""
    rows = []
    for fold in range(1, 6):
        for k in range(per_fold):
            target = sorted(ESC_CATEGORIES)[(fold + k) % 3]
            category, esc10 = ESC_CATEGORIES[target]
            src_file = f"{100000 + 37 * fold + k}"
            rows.append((f"{fold}-{src_file}-A-{target}.wav", fold, target, category, esc10,
                         src_file))
    os.makedirs(os.path.join(root, "meta"))
    with open(os.path.join(root, "meta", "esc50.csv"), "w") as f:
        f.write(ESC_HEADER + "\n")
        for name, fold, target, category, esc10, src_file in rows:
            f.write(f"{name},{fold},{target},{category},{esc10},{src_file},A\n")
            _wav(os.path.join(root, "audio", name), rate=44100)
    return rows


def test_esc50_folds(tmp_path):
    src, dest = tmp_path / "ESC-50-master", tmp_path / "out"
    rows = _esc50(str(src))
    summary = prepare_esc50(src, dest)

    assert read_manifest(str(dest / "fold3_test.tsv")).root == str(src / "audio")
    # 0.1 s at the file's own rate (44.1 kHz): nothing is resampled.
    expected = {f: [(r[0], 4410, [r[3]]) for r in rows if r[1] == f] for f in range(1, 6)}
    for f in range(1, 6):
        assert _clips(str(dest), f"fold{f}_test") == expected[f]
        assert _clips(str(dest), f"fold{f}_train") == [
            c for g in range(1, 6) if g != f for c in expected[g]]
    assert _lines(dest / "fold3_test.tsv") == [str(src / "audio")] + [
        f"{r[0]}\t4410" for r in rows if r[1] == 3]
    assert _lines(dest / "fold3_test.label") == [r[3] for r in rows if r[1] == 3]
    assert len(_clips(str(dest), "all")) == 10

    assert summary["splits"]["fold3_test"]["clips"] == 2
    assert summary["splits"]["fold3_train"]["clips"] == 8
    assert summary["num_classes"] == 3 and summary["folds"] == [1, 2, 3, 4, 5]
    assert summary["files_probed"] == 10 and summary["missing"] == 0
    assert summary["sample_rates"] == {"44100": 10}
    assert any("44100 Hz" in w and "task.resample=true" in w for w in summary["warnings"])


def test_esc50_missing_audio_esc10_and_audio_dir(tmp_path):
    src = tmp_path / "ESC-50-master"
    rows = _esc50(str(src))
    gone = rows[4][0]  # a fold-3 clip
    os.remove(src / "audio" / gone)
    summary = prepare_esc50(src, tmp_path / "out")
    assert summary["missing"] == 1
    assert summary["splits"]["fold3_test"]["missing"] == 1
    assert summary["splits"]["fold3_test"]["clips"] == 1
    assert summary["splits"]["fold1_train"]["missing"] == 1
    assert _lines(tmp_path / "out" / "missing_all.txt") == [gone]
    assert any("9 of 10 listed clips found; 1 missing" in w for w in summary["warnings"])

    # ESC-10 subset, from a separate (here 16 kHz) audio folder with the same names.
    for name, *_ in rows:
        _wav(str(tmp_path / "audio16k" / name), rate=16000)
    summary = prepare_esc50(src, tmp_path / "out10", audio_dir=tmp_path / "audio16k",
                            esc10_only=True)
    assert [c[2] for c in _clips(str(tmp_path / "out10"), "all")] == [["dog"]] * 3
    assert summary["sample_rates"] == {"16000": 3} and summary["subset"] == "ESC-10"
    assert not any("task.resample" in w for w in summary["warnings"])


def test_esc50_errors(tmp_path):
    with pytest.raises(PrepareError, match="ESC-50 folder .* does not exist"):
        prepare_esc50(tmp_path / "nope", tmp_path / "out")
    src = tmp_path / "ESC-50-master"
    rows = _esc50(str(src))
    csv_path = src / "meta" / "esc50.csv"
    text = csv_path.read_text()
    csv_path.write_text(text.replace(",category,", ",label,", 1))
    with pytest.raises(PrepareError, match=r"esc50.csv: missing column\(s\) category"):
        prepare_esc50(src, tmp_path / "out")
    csv_path.write_text(text.replace(rows[0][0] + ",1,", rows[0][0] + ",one,"))
    with pytest.raises(PrepareError, match="line 2: fold 'one' is not an integer"):
        prepare_esc50(src, tmp_path / "out")
    csv_path.write_text(text)
    with pytest.raises(PrepareError, match=r"fold\(s\) \[6\]"):
        prepare_esc50(src, tmp_path / "out", folds=[6])
    for name, *_ in rows:
        os.remove(src / "audio" / name)
    with pytest.raises(PrepareError, match=r"no usable clips .*\(10 listed, 10 missing"):
        prepare_esc50(src, tmp_path / "out")


# ---------------------------------------------------------------------------
# Speech Commands
# ---------------------------------------------------------------------------


def _speechcommands(root):
    files = [f"{word}/{spk}_nohash_{n}.wav" for word in ("right", "yes", "zero")
             for spk in ("0a7c2a8d", "1b4c9b89", "c1d39ce8") for n in (0, 1)]
    for rel in files:
        _wav(os.path.join(root, *rel.split("/")))
    _wav(os.path.join(root, "_background_noise_", "white_noise.wav"), seconds=0.3)
    with open(os.path.join(root, "_background_noise_", "README.md"), "w") as f:
        f.write("noise")
    for name in ("LICENSE", "README.md"):
        with open(os.path.join(root, name), "w") as f:
            f.write("x")
    valid = ["right/1b4c9b89_nohash_0.wav", "yes/1b4c9b89_nohash_0.wav"]
    test = ["right/c1d39ce8_nohash_1.wav", "zero/c1d39ce8_nohash_0.wav",
            "zero/ffffffff_nohash_0.wav"]  # the last one is not on disk
    with open(os.path.join(root, "validation_list.txt"), "w") as f:
        f.write("\n".join(valid) + "\n")
    with open(os.path.join(root, "testing_list.txt"), "w") as f:
        f.write("\n".join(test) + "\n")
    return files, valid, test


def test_speechcommands_splits(tmp_path):
    src, dest = tmp_path / "speech_commands_v0.02", tmp_path / "out"
    files, valid, test = _speechcommands(str(src))
    summary = prepare_speechcommands(src, dest)

    assert _lines(dest / "valid.tsv") == [str(src)] + [f"{p}\t1600" for p in valid]
    assert _lines(dest / "valid.label") == ["right", "yes"]
    assert _clips(str(dest), "test") == [(p, 1600, [p.split("/")[0]]) for p in test[:2]]
    train = _clips(str(dest), "train")
    assert [c[0] for c in train] == sorted(set(files) - set(valid) - set(test))
    assert all(c[2] == [c[0].split("/")[0]] for c in train)
    written = " ".join(_lines(dest / "train.tsv") + _lines(dest / "valid.tsv")
                       + _lines(dest / "test.tsv"))
    assert "_background_noise_" not in written
    assert _lines(dest / "missing_test.txt") == ["zero/ffffffff_nohash_0.wav"]
    assert summary["splits"]["test"] == {
        "clips": 2, "listed": 3, "missing": 1, "unreadable": 0, "classes": 2,
        "manifest": str(dest / "test.tsv"), "missing_list": str(dest / "missing_test.txt")}
    assert summary["splits"]["train"]["clips"] == 18 - 4
    assert summary["excluded_folders"] == {"_background_noise_": 1}
    assert summary["words"] == 3 and summary["classes"] == ["right", "yes", "zero"]
    assert not (dest / "missing_valid.txt").exists()


def test_speechcommands_errors(tmp_path):
    src = tmp_path / "sc"
    _speechcommands(str(src))
    os.remove(src / "testing_list.txt")
    with pytest.raises(PrepareError, match="testing_list.txt does not exist"):
        prepare_speechcommands(src, tmp_path / "out")
    (src / "testing_list.txt").write_text("right\n")
    with pytest.raises(PrepareError, match="testing_list.txt line 1: expected word/file.wav"):
        prepare_speechcommands(src, tmp_path / "out")


# ---------------------------------------------------------------------------
# VoxCeleb1
# ---------------------------------------------------------------------------

VOX_SPLIT = """1 id10001/1zcIwhmdeo4/00001.wav
1 id10001/1zcIwhmdeo4/00002.wav
2 id10001/7w0IBEWc9Qw/00001.wav
3 id10001/Y8hIVOBuels/00001.wav
1 id10002/0_laIeN-Q44/00001.wav
2 id10002/6WxS8rpNjmk/00001.wav
3 id10002/C7k7C-PDvAA/00001.wav
3 id10002/C7k7C-PDvAA/00002.wav
"""


def _vox_audio(audio_dir, skip=()):
    """The clips of VOX_SPLIT under ``audio_dir``, except those in ``skip``."""
    for line in VOX_SPLIT.splitlines():
        rel = line.split()[1]
        if rel not in skip:
            _wav(str(audio_dir / rel), frames=800)


def test_voxceleb1(tmp_path):
    src, dest = tmp_path / "vox1", tmp_path / "out"
    src.mkdir()
    (src / "iden_split.txt").write_text(VOX_SPLIT)
    _vox_audio(src / "wav", skip=("id10002/C7k7C-PDvAA/00001.wav",))
    summary = prepare_voxceleb1(src, dest)
    assert _lines(dest / "train.tsv") == [str(src / "wav"), "id10001/1zcIwhmdeo4/00001.wav\t800",
                                          "id10001/1zcIwhmdeo4/00002.wav\t800",
                                          "id10002/0_laIeN-Q44/00001.wav\t800"]
    assert _lines(dest / "train.label") == ["id10001", "id10001", "id10002"]
    assert _clips(str(dest), "valid") == [("id10001/7w0IBEWc9Qw/00001.wav", 800, ["id10001"]),
                                          ("id10002/6WxS8rpNjmk/00001.wav", 800, ["id10002"])]
    assert _clips(str(dest), "test") == [("id10001/Y8hIVOBuels/00001.wav", 800, ["id10001"]),
                                         ("id10002/C7k7C-PDvAA/00002.wav", 800, ["id10002"])]
    assert _lines(dest / "missing_test.txt") == ["id10002/C7k7C-PDvAA/00001.wav"]
    assert summary["missing"] == 1 and summary["splits"]["test"]["missing"] == 1
    assert summary["num_classes"] == 2 and summary["speakers_listed"] == 2


def test_voxceleb1_separate_audio_dirs(tmp_path):
    src = tmp_path / "meta"
    src.mkdir()
    (src / "iden_split.txt").write_text(VOX_SPLIT)
    # The dev archive lacks the two C7k7C-PDvAA clips; the test archive has only those.
    _vox_audio(tmp_path / "vox1_dev_wav" / "wav",
               skip=("id10002/C7k7C-PDvAA/00001.wav", "id10002/C7k7C-PDvAA/00002.wav"))
    _vox_audio(tmp_path / "vox1_test_wav" / "wav",
               skip=[line.split()[1] for line in VOX_SPLIT.splitlines()][:6])
    dest = tmp_path / "out"
    # One folder: everything it holds is found.
    summary = prepare_voxceleb1(src, dest, audio_dirs=[tmp_path / "vox1_dev_wav" / "wav"])
    assert summary["missing"] == 2 and summary["root"] == str(tmp_path / "vox1_dev_wav" / "wav")
    # Two folders: the root is their common parent.
    summary = prepare_voxceleb1(src, dest, audio_dirs=[tmp_path / "vox1_dev_wav" / "wav",
                                                       tmp_path / "vox1_test_wav" / "wav"])
    assert summary["missing"] == 0 and not (dest / "missing_test.txt").exists()
    assert _lines(dest / "test.tsv") == [str(tmp_path),
                                         "vox1_dev_wav/wav/id10001/Y8hIVOBuels/00001.wav\t800",
                                         "vox1_test_wav/wav/id10002/C7k7C-PDvAA/00001.wav\t800",
                                         "vox1_test_wav/wav/id10002/C7k7C-PDvAA/00002.wav\t800"]


def test_voxceleb1_errors(tmp_path):
    src = tmp_path / "vox1"
    src.mkdir()
    with pytest.raises(PrepareError, match="iden_split.txt does not exist"):
        prepare_voxceleb1(src, tmp_path / "out")
    (src / "iden_split.txt").write_text(VOX_SPLIT)
    with pytest.raises(PrepareError, match="audio folder .*wav does not exist"):
        prepare_voxceleb1(src, tmp_path / "out")
    (src / "wav").mkdir()
    with pytest.raises(PrepareError, match=r"no usable clips .*8 listed, 8 missing"):
        prepare_voxceleb1(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (src / "iden_split.txt").write_text(VOX_SPLIT + "4 id10003/x/00001.wav\n")
    with pytest.raises(PrepareError, match="iden_split.txt line 9: expected"):
        prepare_voxceleb1(src, tmp_path / "out")


# ---------------------------------------------------------------------------
# AudioSet
# ---------------------------------------------------------------------------

AS_CLASSES = """index,mid,display_name
0,/m/09x0r,"Speech"
1,/m/05zppz,"Male speech, man speaking"
2,/m/02zsn,"Female speech, woman speaking"
3,/m/0ytgt,"Child speech, kid speaking"
4,/t/dd00088,"Gush"
"""

AS_EVAL = """# Segments csv created Sun Mar  5 10:54:25 2017
# num_ytids=4, num_segs=4, num_unique_labels=4, num_positive_labels=6
# YTID, start_seconds, end_seconds, positive_labels
--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_"
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"
-0RWZT-miFs, 420.000, 430.000, "/m/05zppz"
-1nilez17Dg, 30.000, 40.000, "/m/0ytgt,/m/02zsn,/m/09x0r"
"""


def _audioset(root):
    root.mkdir()
    (root / "class_labels_indices.csv").write_text(AS_CLASSES)
    (root / "eval_segments.csv").write_text(AS_EVAL.replace('"/m/068hy,/m/07q6cd_"', '"/m/09x0r"'))
    (root / "balanced_train_segments.csv").write_text(
        AS_EVAL.replace("--4gqARaEJE, 0.000, 10.000, \"/m/068hy,/m/07q6cd_\"\n", ""))
    audio = root / "audio"
    _wav(str(audio / "eval" / "--PJHxphWEs.wav"), frames=1000)           # {ytid}
    _wav(str(audio / "eval" / "Y-1nilez17Dg.wav"), frames=1001)          # Y{ytid}
    _wav(str(audio / "eval" / "--4gqARaEJE_0.000.flac"), frames=1002)    # {ytid}_{start}
    _wav(str(audio / "other" / "unrelated.wav"), frames=1003)
    return audio


def test_audioset(tmp_path):
    src, dest = tmp_path / "audioset", tmp_path / "out"
    audio = _audioset(src)
    summary = prepare_audioset(src, dest, splits=[("eval", "eval_segments.csv")],
                               audio_dir=audio)
    assert _lines(dest / "eval.tsv") == [str(audio), "eval/--4gqARaEJE_0.000.flac\t1002",
                                         "eval/--PJHxphWEs.wav\t1000",
                                         "eval/Y-1nilez17Dg.wav\t1001"]
    # mids, not display names (which hold commas); multi-label in csv order.
    assert _lines(dest / "eval.label") == ["/m/09x0r", "/m/09x0r,/t/dd00088",
                                           "/m/0ytgt,/m/02zsn,/m/09x0r"]
    assert read_labels(str(dest / "eval.tsv"))[2] == ["/m/0ytgt", "/m/02zsn", "/m/09x0r"]
    assert _lines(dest / "classes.tsv") == [
        "/m/09x0r\tSpeech", "/m/05zppz\tMale speech, man speaking",
        "/m/02zsn\tFemale speech, woman speaking", "/m/0ytgt\tChild speech, kid speaking",
        "/t/dd00088\tGush"]
    assert _lines(dest / "missing_eval.txt") == ["-0RWZT-miFs,420.000,430.000"]
    assert summary["splits"]["eval"]["listed"] == 4
    assert summary["splits"]["eval"]["missing"] == 1
    assert any("3 of 4 listed clips found; 1 missing, list in " + str(dest / "missing_eval.txt")
               in w for w in summary["warnings"])
    assert summary["name_patterns_matched"]["{ytid}"] == 1
    assert summary["name_patterns_matched"]["Y{ytid}"] == 1
    assert summary["name_patterns_matched"]["{ytid}_{start}"] == 1
    assert summary["num_classes"] == 4 and summary["classes_in_class_list"] == 5
    assert summary["audio_files_indexed"] == 4


def test_audioset_default_splits_and_name_pattern(tmp_path):
    src = tmp_path / "audioset"
    audio = _audioset(src)
    _wav(str(audio / "mine" / "-0RWZT-miFs_420.wav"), frames=999)
    summary = prepare_audioset(src, tmp_path / "out", audio_dir=audio,
                               name_patterns=["{ytid}_{start_int}.wav"])
    # Only the official csvs present in SRC, under their default names.
    assert sorted(summary["splits"]) == ["balanced_train", "eval"]
    assert _clips(str(tmp_path / "out"), "eval") == [("mine/-0RWZT-miFs_420.wav", 999,
                                                      ["/m/05zppz"])]
    assert summary["splits"]["balanced_train"]["missing"] == 2
    with pytest.raises(PrepareError, match=r"no usable clips .*3 listed, 3 missing"):
        prepare_audioset(src, tmp_path / "out2", splits=[("b", "balanced_train_segments.csv")],
                         audio_dir=audio, name_patterns=["{ytid}.ogg"])
    with pytest.raises(PrepareError, match="no {ytid} placeholder"):
        prepare_audioset(src, tmp_path / "out2", name_patterns=["{start}.wav"])
    with pytest.raises(PrepareError, match="bad placeholder"):
        prepare_audioset(src, tmp_path / "out2", name_patterns=["{ytid}_{begin}.wav"])


def test_audioset_errors(tmp_path):
    src = tmp_path / "audioset"
    audio = _audioset(src)
    bad = tmp_path / "bad_eval_segments.csv"
    bad.write_text(AS_EVAL)  # its first row has labels outside the class list
    with pytest.raises(PrepareError, match="bad_eval_segments.csv line 4: label.* /m/068hy, "
                                           "/m/07q6cd_ are not in the class list"):
        prepare_audioset(src, tmp_path / "out", audio_dir=audio, splits=[("eval", str(bad))])
    (src / "class_labels_indices.csv").write_text(AS_CLASSES.replace("display_name", "name", 1))
    with pytest.raises(PrepareError, match=r"missing column\(s\) display_name"):
        prepare_audioset(src, tmp_path / "out", audio_dir=audio)
    (src / "class_labels_indices.csv").write_text(AS_CLASSES)
    (src / "eval_segments.csv").write_text(AS_EVAL.splitlines()[0] + "\nabc, 0.000\n")
    with pytest.raises(PrepareError, match="eval_segments.csv line 2: expected 4 fields"):
        prepare_audioset(src, tmp_path / "out", audio_dir=audio)
    with pytest.raises(PrepareError, match="segment csv .*nope.csv does not exist"):
        prepare_audioset(src, tmp_path / "out", splits=[("x", "nope.csv")])
    os.remove(src / "eval_segments.csv")
    os.remove(src / "balanced_train_segments.csv")
    with pytest.raises(PrepareError, match="no segment csvs given"):
        prepare_audioset(src, tmp_path / "out")


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def test_cli(tmp_path, capsys):
    src = tmp_path / "ESC-50-master"
    _esc50(str(src), per_fold=1)
    assert main(["esc50", str(src), str(tmp_path / "out"), "--folds", "2", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(summary["splits"]) == ["all", "fold2_test", "fold2_train"]
    assert summary["splits"]["fold2_train"]["clips"] == 4

    assert main(["audioset", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: AudioSet folder")

    with pytest.raises(SystemExit):
        main(["audioset", str(tmp_path), str(tmp_path / "out"), "--split", "eval"])
    assert "expected NAME=CSV" in capsys.readouterr().err
