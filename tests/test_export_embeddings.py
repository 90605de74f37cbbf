"""uamix-embed: embeddings of a manifest or a folder, written as .npy/.txt or .npz."""

import os

import numpy as np
import pytest
import soundfile as sf

import demo_data
from uamix_fairseq.modules.audiomae import EncoderConfig, write_random_audiomae
from uamix_fairseq.tools.embed import EmbedConfig, embed_manifest, load_encoder
from uamix_fairseq.tools.export_embeddings import audio_extensions, export_embeddings, main
from uamix_fairseq.manifest import read_manifest, write_manifest

TINY = EncoderConfig(embed_dim=64, depth=2, num_heads=1, num_frames=32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    assert demo_data.main([str(out), "--clips-per-class", "2", "--seconds", "0.5"]) == 0
    return out


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "tiny.pth"
    write_random_audiomae(str(path), TINY)
    return str(path)


@pytest.fixture(scope="module")
def reference(corpus, encoder_file):
    """embed_manifest's rows for train.tsv, by full path."""
    manifest = str(corpus / "train.tsv")
    cfg = EmbedConfig(num_frames=TINY.num_frames, batch_size=7)
    emb = embed_manifest(load_encoder(encoder_file, cfg), manifest, cfg, progress=False)
    m = read_manifest(manifest)
    return {m.full_path(i): emb[i] for i in range(len(m))}, [m.full_path(i) for i in range(len(m))]


def _all_wavs(folder):
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, f), folder) for f in files if f.endswith(".wav")]
    return [os.path.join(str(folder), rel) for rel in sorted(found)]


def test_npz_from_manifest(corpus, encoder_file, reference, tmp_path, capsys):
    out = tmp_path / "emb.npz"
    rc = main(["--encoder", encoder_file, "--manifest", str(corpus / "train.tsv"),
               "--out", str(out), "--quiet", "--batch-size", "5"])
    assert rc == 0
    assert "27 clips x 64 dims" in capsys.readouterr().out
    by_path, order = reference
    z = np.load(out)
    assert sorted(z.files) == ["embeddings", "labels", "paths"]
    assert z["embeddings"].dtype == np.float32 and z["embeddings"].shape == (27, 64)
    assert z["paths"].tolist() == order  # manifest order
    expected = np.stack([by_path[p] for p in order])
    np.testing.assert_allclose(z["embeddings"], expected, rtol=0, atol=1e-5)
    labels = (corpus / "train.label").read_text().split()
    assert z["labels"].tolist() == labels
    # The demo corpus's labels are the class folders: they line up with the paths.
    assert all(f"/{lab}/" in p for lab, p in zip(labels, order))


def test_npy_and_txt_from_folder(corpus, encoder_file, reference, tmp_path):
    out = tmp_path / "sub" / "emb.npy"
    rc = main(["--encoder", encoder_file, "--audio-dir", str(corpus / "audio"),
               "--out", str(out), "--quiet"])
    assert rc == 0
    emb = np.load(out)
    paths = (tmp_path / "sub" / "emb.txt").read_text().splitlines()
    assert paths == _all_wavs(corpus / "audio")  # every clip, sorted by relative path
    assert emb.shape == (50, 64)
    by_path, _ = reference
    shared = [i for i, p in enumerate(paths) if p in by_path]
    assert len(shared) == 27  # train.tsv's clips; the other 23 are valid.tsv's and heldout.tsv's
    np.testing.assert_allclose(emb[shared], np.stack([by_path[paths[i]] for i in shared]),
                               rtol=0, atol=1e-5)
    assert not os.path.exists(tmp_path / "sub" / "emb.txt.npy")


def test_folder_reads_any_soundfile_format_and_skips_broken_files(corpus, encoder_file, tmp_path):
    folder = tmp_path / "mixed"
    (folder / "deep" / "er").mkdir(parents=True)
    wav, sr = sf.read(str(corpus / "audio" / "drum_a" / "drum_a_000.wav"), dtype="int16")
    sf.write(str(folder / "a.wav"), wav, sr, subtype="PCM_16")
    sf.write(str(folder / "deep" / "er" / "b.flac"), wav, sr, subtype="PCM_16")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    (folder / "notes.txt").write_text("not audio")
    assert "flac" in audio_extensions() and "wav" in audio_extensions()
    result = export_embeddings(encoder_file, str(tmp_path / "m.npz"), audio_dir=str(folder),
                               progress=False)
    z = np.load(tmp_path / "m.npz")
    assert z["paths"].tolist() == [str(folder / "a.wav"), str(folder / "deep" / "er" / "b.flac")]
    assert "labels" not in z.files
    # Same samples in another container: the same embedding.
    np.testing.assert_allclose(z["embeddings"][0], z["embeddings"][1], rtol=0, atol=1e-6)
    assert any("broken.wav" in w for w in result["warnings"])


def test_folder_skips_silent_and_truncated_files_like_unreadable_ones(corpus, encoder_file,
                                                                    tmp_path):
    """One rule for a folder (issue 11, item 9): every bad file is skipped and named."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    wav, sr = sf.read(str(corpus / "audio" / "drum_a" / "drum_a_000.wav"), dtype="int16")
    sf.write(str(folder / "a.wav"), wav, sr, subtype="PCM_16")
    sf.write(str(folder / "silent.wav"), np.zeros_like(wav), sr, subtype="PCM_16")
    sf.write(str(folder / "cut.wav"), wav, sr, subtype="PCM_16")
    data = (folder / "cut.wav").read_bytes()
    (folder / "cut.wav").write_bytes(data[:60])  # header kept, samples cut off
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    result = export_embeddings(encoder_file, str(tmp_path / "m.npz"), audio_dir=str(folder),
                               progress=False)
    assert np.load(tmp_path / "m.npz")["paths"].tolist() == [str(folder / "a.wav")]
    text = " ".join(result["warnings"])
    for name in ("silent.wav", "cut.wav", "broken.wav"):
        assert name in text, text
    assert "uamix-embed-" not in text  # no temporary manifest named


def test_a_bad_clip_of_a_manifest_names_the_tools_remedy(corpus, encoder_file, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    wav, sr = sf.read(str(corpus / "audio" / "drum_a" / "drum_a_000.wav"), dtype="int16")
    sf.write(str(folder / "silent.wav"), np.zeros_like(wav), sr, subtype="PCM_16")
    write_manifest(folder / "clips.tsv", str(folder), [("silent.wav", len(wav))])
    with pytest.raises(ValueError) as err:
        export_embeddings(encoder_file, str(tmp_path / "x.npz"),
                          manifest=str(folder / "clips.tsv"), progress=False)
    message = str(err.value)
    assert "clips.tsv" in message and "--audio-dir" in message
    assert "task.skip_bad_audio" not in message


def test_cache_dir_reuses_embeddings(corpus, encoder_file, tmp_path):
    cache = tmp_path / "cache"
    kwargs = dict(manifest=str(corpus / "valid.tsv"), cache_dir=str(cache), progress=False)
    export_embeddings(encoder_file, str(tmp_path / "a.npy"), **kwargs)
    assert len(list(cache.glob("*.npy"))) == 1
    export_embeddings(encoder_file, str(tmp_path / "b.npy"), **kwargs)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert len(list(cache.glob("*.npy"))) == 1


def test_num_frames_option_changes_the_input_length(corpus, encoder_file, tmp_path):
    result = export_embeddings(encoder_file, str(tmp_path / "a.npz"),
                               manifest=str(corpus / "valid.tsv"), num_frames=48,
                               pooling="cls", norm="esc50", progress=False)
    assert result["num_frames"] == 48 and result["num_clips"] == 3


def test_errors_are_clear(corpus, encoder_file, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no audio here")
    out = str(tmp_path / "x.npz")
    assert main(["--encoder", encoder_file, "--audio-dir", str(empty), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "no readable audio files" in err and str(empty) in err

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    assert main(["--encoder", str(bad), "--manifest", str(corpus / "train.tsv"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "cannot read" in err

    missing = str(tmp_path / "absent.pth")
    assert main(["--encoder", missing, "--audio-dir", str(corpus / "audio"), "--out", out]) == 2
    assert "does not exist" in capsys.readouterr().err

    assert main(["--encoder", encoder_file, "--manifest", str(corpus / "train.tsv"),
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert ".npy" in capsys.readouterr().err

    assert main(["--encoder", encoder_file, "--audio-dir", str(tmp_path / "nowhere"),
                 "--out", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not os.path.exists(out)

    with pytest.raises(SystemExit):  # neither --manifest nor --audio-dir
        main(["--encoder", encoder_file, "--out", out])
