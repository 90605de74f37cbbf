"""uamix-plot-tsne: stratified subsets, perplexity clipping, separation, valid PNGs."""

import struct
from collections import Counter

import numpy as np
import pytest

import demo_data
from uamix_fairseq.modules.audiomae import EncoderConfig, write_random_audiomae
from uamix_fairseq.manifest import read_manifest
from uamix_fairseq.tools.tsne import effective_perplexity, main, plot_tsne, stratified_subsample, tsne_2d

TINY = EncoderConfig(embed_dim=64, depth=2, num_heads=1, num_frames=32)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    assert demo_data.main([str(out), "--clips-per-class", "4", "--heldout-clips-per-class", "1",
                           "--seconds", "0.5"]) == 0
    return out


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("enc")
    paths = []
    for seed in (0, 1):
        paths.append(str(folder / f"tiny{seed}.pth"))
        write_random_audiomae(paths[-1], TINY, seed=seed)
    return paths


def _png_size(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    import matplotlib.image

    image = matplotlib.image.imread(str(path))  # decodes the whole file
    assert image.shape[:2] == (height, width)
    return width, height


def test_stratified_subsample_keeps_class_shares():
    classes = ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5
    rng = np.random.default_rng(0)
    classes = list(np.asarray(classes)[rng.permutation(100)])
    chosen = stratified_subsample(classes, 20, seed=0)
    assert len(chosen) == 20 and len(set(chosen.tolist())) == 20
    assert np.all(np.diff(chosen) > 0)  # sorted: manifest order kept
    counts = Counter(classes[i] for i in chosen)
    assert counts == {"a": 10, "b": 6, "c": 3, "d": 1}
    np.testing.assert_array_equal(chosen, stratified_subsample(classes, 20, seed=0))
    assert not np.array_equal(chosen, stratified_subsample(classes, 20, seed=1))
    # Small budgets still keep every class.
    assert set(classes[i] for i in stratified_subsample(classes, 4, seed=0)) == {"a", "b", "c", "d"}
    few = stratified_subsample(classes, 2, seed=0)
    assert len(few) == 2
    np.testing.assert_array_equal(stratified_subsample(classes, 100, seed=0), np.arange(100))
    with pytest.raises(ValueError):
        stratified_subsample(classes, 0)


def test_perplexity_is_clipped_for_few_points():
    assert effective_perplexity(1000, 30.0) == 30.0
    assert effective_perplexity(22, 30.0) == 7.0
    assert effective_perplexity(2, 30.0) == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        effective_perplexity(1)


def test_separated_classes_stay_separated():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 32)) * 8.0
    labels = np.repeat(np.arange(4), 20)
    x = centres[labels] + rng.standard_normal((80, 32))
    y = tsne_2d(x, seed=0, threads=1)
    assert y.shape == (80, 2) and y.dtype == np.float32
    d = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    agreement = (labels[d.argmin(1)] == labels).mean()  # leave-one-out 1-NN
    assert agreement > 0.9
    np.testing.assert_array_equal(y, tsne_2d(x, seed=0, threads=1))  # fixed seed
    # Few points: the perplexity is lowered instead of sklearn refusing.
    assert tsne_2d(x[:5], seed=0, threads=1).shape == (5, 2)


def test_two_encoders_side_by_side(corpus, encoders, tmp_path, capsys):
    out = tmp_path / "plots" / "tsne.png"
    coords = tmp_path / "coords.npz"
    rc = main(["--manifest", str(corpus / "train.tsv"), "--encoder", encoders[0],
               "--name", "before", "--encoder", encoders[1], "--name", "after",
               "--out", str(out), "--max-clips", "30", "--threads", "1", "--quiet",
               "--save-coords", str(coords)])
    assert rc == 0
    assert "30 clips, 15 classes, 2 panel(s)" in capsys.readouterr().out
    width, height = _png_size(out)
    assert width > 1.5 * height  # two panels side by side plus the legend
    z = np.load(coords)
    assert z["coords_0"].shape == (30, 2) and z["coords_1"].shape == (30, 2)
    assert not np.allclose(z["coords_0"], z["coords_1"])
    assert z["names"].tolist() == ["before", "after"]
    assert Counter(z["classes"].tolist()) == {c: 2 for c in demo_data.SEEN_CLASSES}
    m = read_manifest(str(corpus / "train.tsv"))
    everything = [m.full_path(i) for i in range(len(m))]
    assert all(p in everything for p in z["paths"])
    assert [everything.index(p) for p in z["paths"]] == sorted(everything.index(p) for p in z["paths"])


def test_one_encoder_all_clips(corpus, encoders, tmp_path):
    out = tmp_path / "one.png"
    rc = main(["--manifest", str(corpus / "train.tsv"), "--encoder", encoders[0],
               "--out", str(out), "--threads", "1", "--quiet", "--perplexity", "50"])
    assert rc == 0  # 29 clips: the perplexity is lowered to 9.3
    width, height = _png_size(out)
    assert width > height


def test_many_classes_get_distinct_styles(tmp_path):
    rng = np.random.default_rng(0)
    classes = [f"class_{i:02d}" for i in range(30) for _ in range(3)]
    out = plot_tsne([("random", rng.standard_normal((90, 2)))], classes, tmp_path / "many.png")
    _png_size(out)


def test_errors(corpus, encoders, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    base = ["--manifest", str(corpus / "train.tsv"), "--out", out, "--quiet"]
    assert main(base + ["--encoder", encoders[0], "--name", "a", "--name", "b"]) == 2
    assert "--name" in capsys.readouterr().err
    assert main(base + ["--encoder", str(tmp_path / "absent.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
    no_labels = tmp_path / "copy.tsv"
    no_labels.write_text((corpus / "train.tsv").read_text())
    assert main(["--manifest", str(no_labels), "--encoder", encoders[0], "--out", out]) == 2
    assert "copy.label does not exist" in capsys.readouterr().err
    assert main(base[:-3] + ["--out", str(tmp_path / "x.jpg"), "--encoder", encoders[0]]) == 2
    assert ".png" in capsys.readouterr().err
