"""Tests of uamix_fairseq.manifest: reading, writing and making fairseq manifests."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from uamix_fairseq.manifest import Manifest, ManifestError, main, make_manifests, read_manifest, write_manifest


def _manifest_file(tmp_path, text, name="m.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _tone(num_samples, sample_rate=16000):
    return 0.3 * np.sin(2 * np.pi * 440 * np.arange(num_samples) / sample_rate)


# ---------------------------------------------------------------------------
# read_manifest
# ---------------------------------------------------------------------------


def test_read_good_manifest(tmp_path):
    path = _manifest_file(tmp_path, f"{tmp_path}\na/x.wav\t16000\nb.flac\t400\n")
    manifest = read_manifest(path)
    assert manifest.root == str(tmp_path)
    assert manifest.paths == ["a/x.wav", "b.flac"]
    assert manifest.sizes == [16000, 400]
    assert len(manifest) == 2
    assert manifest.full_path(0) == os.path.join(str(tmp_path), "a/x.wav")


def test_blank_trailing_lines_and_crlf_are_accepted(tmp_path):
    path = _manifest_file(tmp_path, f"{tmp_path}\r\nx.wav\t10\r\n\n  \n")
    assert read_manifest(path).paths == ["x.wav"]


def test_missing_manifest(tmp_path):
    path = str(tmp_path / "absent.tsv")
    with pytest.raises(ManifestError, match="does not exist") as err:
        read_manifest(path)
    assert path in str(err.value)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_manifest(tmp_path, text):
    path = _manifest_file(tmp_path, text)
    with pytest.raises(ManifestError, match="line 1: the file is empty") as err:
        read_manifest(path)
    assert path in str(err.value)


def test_missing_root_directory(tmp_path):
    missing = tmp_path / "no_such_dir"
    path = _manifest_file(tmp_path, f"{missing}\nx.wav\t10\n")
    with pytest.raises(ManifestError, match="line 1: root directory") as err:
        read_manifest(path)
    assert path in str(err.value) and str(missing) in str(err.value)


def test_root_without_clip_lines(tmp_path):
    path = _manifest_file(tmp_path, f"{tmp_path}\n\n")
    with pytest.raises(ManifestError, match="line 2: no clip lines") as err:
        read_manifest(path)
    assert path in str(err.value)


@pytest.mark.parametrize(
    "bad_line, pattern",
    [
        ("z.wav", "expected 2 tab-separated fields"),
        ("z.wav\t10\t3", "expected 2 tab-separated fields"),
        ("z.wav 10", "expected 2 tab-separated fields"),  # spaces are not tabs
        ("z.wav\tten", "not an integer"),
        ("z.wav\t1.5", "not an integer"),
        ("z.wav\t0", "not positive"),
        ("z.wav\t-3", "not positive"),
        ("\t10", "path field is empty"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, pattern):
    path = _manifest_file(tmp_path, f"{tmp_path}\nx.wav\t10\n{bad_line}\ny.wav\t20\n")
    with pytest.raises(ManifestError, match=pattern) as err:
        read_manifest(path)
    assert f"manifest {path} line 3" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_blank_line_between_clips_is_refused(tmp_path):
    path = _manifest_file(tmp_path, f"{tmp_path}\nx.wav\t10\n\ny.wav\t20\n")
    with pytest.raises(ManifestError, match="line 3: blank line"):
        read_manifest(path)


# ---------------------------------------------------------------------------
# write_manifest
# ---------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path):
    entries = [("a/x.wav", 16000), ("b y.flac", 401), ("c/d/e.ogg", 7)]
    path = tmp_path / "sub" / "train.tsv"  # the folder is created
    assert write_manifest(path, str(tmp_path), entries) == 3
    assert path.read_text().splitlines()[1] == "a/x.wav\t16000"
    manifest = read_manifest(path)
    assert manifest == Manifest(root=str(tmp_path), paths=[e[0] for e in entries], sizes=[e[1] for e in entries])


@pytest.mark.parametrize("entry", [("a\tb.wav", 10), ("a.wav", 0), ("a.wav", 2.5), ("", 3)])
def test_write_refuses_unrepresentable_entries(tmp_path, entry):
    path = str(tmp_path / "m.tsv")
    with pytest.raises(ManifestError) as err:
        write_manifest(path, str(tmp_path), [entry])
    assert path in str(err.value)


# ---------------------------------------------------------------------------
# make_manifests
# ---------------------------------------------------------------------------


@pytest.fixture
def audio_tree(tmp_path):
    """A small folder: readable wav/flac/WAV files, a 22.05 kHz file, junk."""
    root = tmp_path / "audio"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    good = {
        "a/one.wav": (1000, 16000),
        "a/two.flac": (1200, 16000),
        "b/deep/three.WAV": (800, 16000),
        "b/four.wav": (900, 22050),
        "top.ogg": (1600, 16000),
    }
    for rel, (frames, rate) in good.items():
        fmt = "WAV" if rel.lower().endswith(".wav") else None
        sf.write(str(root / rel), _tone(frames, rate), rate, format=fmt)
    (root / "a" / "notes.txt").write_text("not audio")
    (root / "b" / "broken.wav").write_bytes(os.urandom(500))
    header_only = open(root / "a" / "one.wav", "rb").read()[:44]
    (root / "b" / "empty.wav").write_bytes(header_only)
    return root, good


def test_make_manifests_lists_readable_files(tmp_path, audio_tree):
    root, good = audio_tree
    dest = tmp_path / "manifests"
    summary = make_manifests(root, dest, valid_percent=0.0)
    train = read_manifest(dest / "train.tsv")
    assert train.root == str(root.resolve())
    # Sorted by relative path, whatever order the file system lists them in.
    assert train.paths == ["a/one.wav", "a/two.flac", "b/deep/three.WAV", "b/four.wav", "top.ogg"]
    assert train.sizes == [good[p][0] for p in train.paths]
    assert not (dest / "valid.tsv").exists()
    assert summary["valid_manifest"] is None
    assert any("no valid manifest" in w for w in summary["warnings"])
    assert summary["num_train"] == 5 and summary["num_valid"] == 0
    assert summary["num_found"] == 7
    # The unreadable and the empty wav are skipped and named; notes.txt is ignored.
    assert summary["num_skipped"] == 2
    assert sorted(s["path"] for s in summary["skipped"]) == ["b/broken.wav", "b/empty.wav"]
    assert summary["sample_rates"] == {16000: 4, 22050: 1}


def test_make_manifests_warns_about_other_rates(tmp_path, audio_tree, caplog):
    root, _ = audio_tree
    with caplog.at_level("WARNING", logger="uamix_fairseq.manifest"):
        summary = make_manifests(root, tmp_path / "m", valid_percent=0.0)
    rate_warnings = [w for w in summary["warnings"] if "22050 Hz" in w]
    assert rate_warnings and "task.resample=true" in rate_warnings[0]
    assert "22050 Hz" in caplog.text and "b/broken.wav" in caplog.text


def test_path_must_contain_and_extensions(tmp_path, audio_tree):
    root, _ = audio_tree
    summary = make_manifests(root, tmp_path / "m", valid_percent=0.0, path_must_contain="deep")
    assert read_manifest(tmp_path / "m" / "train.tsv").paths == ["b/deep/three.WAV"]
    assert summary["num_skipped"] == 0
    make_manifests(root, tmp_path / "n", valid_percent=0.0, extensions=[".flac", "OGG"])
    assert read_manifest(tmp_path / "n" / "train.tsv").paths == ["a/two.flac", "top.ogg"]


@pytest.fixture
def many_clips(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    for i in range(20):
        sf.write(str(root / f"c{i:02d}.wav"), _tone(100 + i), 16000)
    return root


@pytest.mark.parametrize("percent, expected_valid", [(0.25, 5), (0.1, 2), (0.01, 2), (0.0, 0)])
def test_valid_split_sizes(tmp_path, many_clips, percent, expected_valid):
    dest = tmp_path / "m"
    summary = make_manifests(many_clips, dest, valid_percent=percent, seed=1)
    assert summary["num_valid"] == expected_valid
    assert summary["num_train"] == 20 - expected_valid
    train = read_manifest(dest / "train.tsv")
    names = list(train.paths)
    if expected_valid:
        valid = read_manifest(dest / "valid.tsv")
        assert len(valid) == expected_valid
        names += valid.paths
        assert valid.paths == sorted(valid.paths)  # sorted order kept
    # Every clip lands in exactly one split.
    assert sorted(names) == [f"c{i:02d}.wav" for i in range(20)]


def test_split_is_deterministic_with_the_seed(tmp_path, many_clips):
    def valid_paths(seed, name):
        make_manifests(many_clips, tmp_path / name, valid_percent=0.3, seed=seed)
        return read_manifest(tmp_path / name / "valid.tsv").paths

    assert valid_paths(7, "a") == valid_paths(7, "b")
    assert valid_paths(7, "a") != valid_paths(8, "c")
    assert (tmp_path / "a" / "train.tsv").read_bytes() == (tmp_path / "b" / "train.tsv").read_bytes()


def test_make_manifests_refuses_bad_input(tmp_path, many_clips):
    with pytest.raises(ManifestError, match="does not exist"):
        make_manifests(tmp_path / "nowhere", tmp_path / "m")
    with pytest.raises(ManifestError, match="outside"):
        make_manifests(many_clips, tmp_path / "m", valid_percent=1.0)
    (tmp_path / "only_junk").mkdir()
    (tmp_path / "only_junk" / "bad.wav").write_bytes(b"RIFF1234")
    with pytest.raises(ManifestError, match="no readable audio files") as err:
        make_manifests(tmp_path / "only_junk", tmp_path / "m")
    assert "1 unreadable" in str(err.value)


def test_cli_writes_manifests_and_prints_summary(tmp_path, many_clips, capsys):
    code = main([str(many_clips), "--dest", str(tmp_path / "out"), "--valid-percent", "0.2", "--ext", "wav", "--seed", "3"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_train"] == 16 and summary["num_valid"] == 4
    assert (tmp_path / "out" / "train.tsv").exists() and (tmp_path / "out" / "valid.tsv").exists()


def test_cli_reports_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--dest", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_valid_split_is_never_a_single_clip(tmp_path, many_clips):
    """1% of 20 clips rounds to 0 or 1: the tool writes 2 and says so (issue 11, item 5)."""
    summary = make_manifests(many_clips, tmp_path / "m", valid_percent=0.01)
    assert summary["num_valid"] == 2
    assert any("at least 2" in w for w in summary["warnings"])


@pytest.mark.parametrize("clips, expected_valid", [(3, 0), (4, 2), (5, 2)])
def test_too_few_clips_for_a_valid_split_write_none_and_say_why(tmp_path, clips, expected_valid):
    root = tmp_path / "few"
    root.mkdir()
    for i in range(clips):
        sf.write(str(root / f"c{i}.wav"), _tone(100 + i), 16000)
    summary = make_manifests(root, tmp_path / "m", valid_percent=0.5)
    assert summary["num_valid"] == expected_valid
    assert summary["num_train"] == clips - expected_valid
    if expected_valid == 0:
        assert not (tmp_path / "m" / "valid.tsv").exists()
        assert any("dataset.disable_validation=true" in w for w in summary["warnings"])


def test_a_name_with_a_tab_is_skipped_and_reported(tmp_path):
    """One badly named file must not abort the run (issue 11, item 9)."""
    root = tmp_path / "clips"
    root.mkdir()
    for name in ("good.wav", "bad\tname.wav", "also_good.wav"):
        sf.write(str(root / name), _tone(200), 16000)
    summary = make_manifests(root, tmp_path / "m", valid_percent=0.0)
    assert summary["num_train"] == 2 and summary["num_skipped"] == 1
    assert summary["skipped"][0]["path"] == "bad\tname.wav"
    assert "tab" in summary["skipped"][0]["reason"]
    assert any("bad\\tname.wav" in w for w in summary["warnings"])  # repr'd in the message
    assert read_manifest(tmp_path / "m" / "train.tsv").paths == ["also_good.wav", "good.wav"]
