"""The HEAR 2021 API: shapes, timestamps and values against the encoder run by hand."""

import numpy as np
import pytest
import torch

from uamix_fairseq.tools import hear
from uamix_fairseq.modules.audiomae import (AudioMAEEncoder, CheckpointError, EncoderConfig,
                                    load_audiomae, save_audiomae, write_random_audiomae)
from uamix_fairseq.audio.features import NORM_STATS, compute_fbank, normalize_fbank, pad_or_crop

TINY = EncoderConfig(embed_dim=64, depth=2, num_heads=1, num_frames=32)
T = TINY.num_frames
ONE_WINDOW = (T - 1) * 160 + 400  # samples that give exactly T frames


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "tiny.pth"
    write_random_audiomae(str(path), TINY)
    return str(path)


@pytest.fixture(scope="module")
def model(encoder_file):
    return hear.load_model(encoder_file)


@pytest.fixture(scope="module")
def encoder(encoder_file):
    return load_audiomae(encoder_file).eval()


def _audio(n_sounds, n_samples, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_samples) / 16000.0
    rows = [0.3 * torch.sin(2 * np.pi * (150 + 170 * i) * t * (1 + t))
            + 0.05 * torch.randn(n_samples, generator=g) for i in range(n_sounds)]
    return torch.stack(rows).float()


def _by_hand(encoder, wav):
    """Per-window pooled embeddings, real frames, and per-time-patch rows of one clip,
    from explicit loops over windows and tokens."""
    mean, std = NORM_STATS["audioset"]
    fb = compute_fbank(wav)
    pooled, real, rows = [], [], []
    for start in range(0, fb.shape[0], T):
        piece = fb[start:start + T]
        real.append(piece.shape[0])
        x = normalize_fbank(pad_or_crop(piece, T), mean, std)[None, None]
        with torch.no_grad():
            pooled.append(encoder.embed(x)[0])
            tokens = encoder(x)[0, 1:]
        grid_f = TINY.num_mel_bins // 16
        for t in range(T // 16):
            rows.append(torch.stack([tokens[k] for k in range(len(tokens)) if k // grid_f == t]).mean(0))
    return torch.stack(pooled), torch.tensor(real, dtype=torch.float32), torch.stack(rows)


def test_model_attributes(model):
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == 64 and isinstance(model.scene_embedding_size, int)
    assert model.timestamp_embedding_size == 64 and isinstance(model.timestamp_embedding_size, int)


@pytest.mark.parametrize("seconds", [1.07, 1.98, 4.0])
def test_shapes_and_timestamps(model, seconds):
    n = int(seconds * 16000)
    audio = torch.rand(2, n) * 2 - 1  # what hear-validator passes
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    duration_ms = 1000.0 * n / 16000
    expected = sum(1 for g in range(1000) if 160 * g + 87.5 <= duration_ms)
    assert emb.shape == (2, expected, 64) and emb.dtype == torch.float32
    assert ts.shape == (2, expected)
    assert torch.equal(ts[0], ts[1])
    diffs = torch.diff(ts[0].double())
    assert torch.all(diffs == 160.0)  # one time patch: 16 frames of 10 ms
    assert ts[0, 0].item() == 87.5  # centre of frames 0..15: (7.5 * 10 + 12.5) ms
    assert duration_ms - 160 < ts[0, -1].item() <= duration_ms  # covers the end, not past it
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (2, 64) and scene.dtype == torch.float32
    assert torch.isfinite(emb).all() and torch.isfinite(scene).all()


def test_one_window_clip_equals_encoder_embed(model, encoder):
    audio = _audio(3, ONE_WINDOW)
    assert compute_fbank(audio[0]).shape[0] == T
    scene = hear.get_scene_embeddings(audio, model)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert ts[0].tolist() == [87.5, 247.5]
    for i in range(3):
        pooled, _, rows = _by_hand(encoder, audio[i])
        assert pooled.shape[0] == 1
        mean, std = NORM_STATS["audioset"]
        x = normalize_fbank(compute_fbank(audio[i]), mean, std)[None, None]
        with torch.no_grad():
            torch.testing.assert_close(scene[i], encoder.embed(x)[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(emb[i], rows, rtol=0, atol=1e-5)


def test_longer_clip_is_covered_by_consecutive_windows(model, encoder):
    n = (2 * T + T // 2 - 1) * 160 + 400  # 2.5 windows: 80 frames = 32 + 32 + 16
    audio = _audio(2, n, seed=1)
    scene = hear.get_scene_embeddings(audio, model)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert ts[0].tolist() == [87.5, 247.5, 407.5, 567.5, 727.5]  # clip is 815 ms long
    for i in range(2):
        pooled, real, rows = _by_hand(encoder, audio[i])
        assert real.tolist() == [32, 32, 16]
        expected = (pooled * (real / real.sum())[:, None]).sum(0)
        torch.testing.assert_close(scene[i], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(emb[i], rows[:5], rtol=0, atol=1e-5)
    # Not just the first window: the second and third windows change the result.
    first_only = hear.get_scene_embeddings(audio[:, :ONE_WINDOW], model)
    assert (scene - first_only).abs().max() > 1e-3


def test_clip_shorter_than_a_window_is_padded(model, encoder):
    audio = _audio(1, 3200)  # 0.2 s: 18 frames
    scene = hear.get_scene_embeddings(audio, model)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    mean, std = NORM_STATS["audioset"]
    x = normalize_fbank(pad_or_crop(compute_fbank(audio[0]), T), mean, std)[None, None]
    with torch.no_grad():
        torch.testing.assert_close(scene[0], encoder.embed(x)[0], rtol=0, atol=1e-5)
    assert ts.tolist() == [[87.5]] and emb.shape == (1, 1, 64)
    # Shorter than half a patch: one embedding, stamped inside the clip.
    _, ts = hear.get_timestamp_embeddings(_audio(1, 800), model)
    assert ts.tolist() == [[25.0]]


def test_internal_batching_does_not_change_results(encoder_file):
    audio = _audio(3, 3 * ONE_WINDOW, seed=2)
    big = hear.load_model(encoder_file)
    small = hear.load_model(encoder_file, batch_size=1, max_fbank_frames=1)
    torch.testing.assert_close(hear.get_scene_embeddings(audio, small),
                               hear.get_scene_embeddings(audio, big), rtol=0, atol=1e-5)
    e1, t1 = hear.get_timestamp_embeddings(audio, small)
    e2, t2 = hear.get_timestamp_embeddings(audio, big)
    torch.testing.assert_close(e1, e2, rtol=0, atol=1e-5)
    assert torch.equal(t1, t2)
    # Each sound's result does not depend on the others in the batch.
    alone = hear.get_scene_embeddings(audio[1:2], big)
    torch.testing.assert_close(alone[0], hear.get_scene_embeddings(audio, big)[1], rtol=0, atol=1e-5)


def test_finetuned_file_applies_fc_norm(tmp_path):
    torch.manual_seed(3)
    enc = AudioMAEEncoder(TINY, final_norm="fc_norm").eval()
    with torch.no_grad():
        enc.fc_norm.weight.uniform_(0.5, 2.0)
        enc.fc_norm.bias.uniform_(-1.0, 1.0)
    path = tmp_path / "ft.pth"
    save_audiomae(enc, str(path))
    model = hear.load_model(str(path))
    audio = _audio(1, ONE_WINDOW)
    mean, std = NORM_STATS["audioset"]
    x = normalize_fbank(compute_fbank(audio[0]), mean, std)[None, None]
    with torch.no_grad():
        expected = enc.embed(x)[0]
        tokens = enc(x)[0, 1:].reshape(2, 8, -1).mean(1)
        rows = enc.fc_norm(tokens)
    torch.testing.assert_close(hear.get_scene_embeddings(audio, model)[0], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(hear.get_timestamp_embeddings(audio, model)[0][0], rows,
                               rtol=0, atol=1e-5)


def test_options_and_other_input_lengths(encoder_file):
    model = hear.load_model(encoder_file, num_frames=64, pooling="cls", norm="esc50")
    assert model.window_frames == 64
    emb, ts = hear.get_timestamp_embeddings(_audio(2, 16000), model)
    assert emb.shape == (2, 6, 64) and ts[0, -1].item() == 887.5
    assert hear.get_scene_embeddings(_audio(2, 16000), model).shape == (2, 64)
    # Runs wherever the model is; results come back on the audio's device.
    assert model(_audio(1, 16000)).device.type == "cpu"


def test_empty_batch(model):
    assert hear.get_scene_embeddings(torch.zeros(0, 16000), model).shape == (0, 64)
    emb, ts = hear.get_timestamp_embeddings(torch.zeros(0, 16000), model)
    assert emb.shape == (0, 6, 64) and ts.shape == (0, 6)


def test_errors(model, encoder_file, tmp_path):
    with pytest.raises(ValueError, match="no default weights"):
        hear.load_model()
    with pytest.raises(ValueError, match="no default weights"):
        hear.load_model("")
    with pytest.raises(TypeError, match="unknown option"):
        hear.load_model(encoder_file, hop_ms=50)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="bad.pth"):
        hear.load_model(str(bad))
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
    with pytest.raises(ValueError, match="fewer than one 25 ms frame"):
        hear.get_timestamp_embeddings(torch.zeros(2, 100), model)
    with pytest.raises(ValueError, match="multiple of 16"):
        hear.load_model(encoder_file, num_frames=40)
