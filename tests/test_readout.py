"""Readout options of the encoder (audiomae.py: features, patch_mask, pool_tokens,
readout), their path through embed.py and the evaluation commands, the default frame
length shared by uamix-fewshot and uamix-embed, and the cache key on audio files."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig, write_random_audiomae
from uamix_fairseq.tools.embed import (EmbedConfig, cache_key, cached_embeddings, embed_manifest,
                                 load_encoder)
from uamix_fairseq.evaluation import _cli, fewshot
from uamix_fairseq.tools.export_embeddings import embed_clips, prepare_encoder
from uamix_fairseq.labels import write_labels
from uamix_fairseq.manifest import write_manifest

CFG = EncoderConfig(embed_dim=32, depth=3, num_heads=2, num_frames=48)


def _encoder(final_norm="norm", seed=0):
    torch.manual_seed(seed)
    enc = AudioMAEEncoder(CFG, final_norm=final_norm).eval()
    with torch.no_grad():  # non-trivial norms, so that on/off differ
        for m in enc.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    return enc


def _block_outputs(enc, x):
    """Each block's output, captured by forward hooks on a plain forward pass."""
    outs = []
    hooks = [blk.register_forward_hook(lambda m, i, o: outs.append(o)) for blk in enc.blocks]
    try:
        final = enc(x)
    finally:
        for h in hooks:
            h.remove()
    return outs, final


def test_features_are_the_blocks_own_outputs():
    enc = _encoder()
    x = torch.randn(2, 1, 48, 128)
    with torch.no_grad():
        outs, final = _block_outputs(enc, x)
        for layer in range(1, CFG.depth + 1):
            raw = enc.features(x, layer=layer, final_norm=False)
            torch.testing.assert_close(raw, outs[layer - 1], rtol=0, atol=0)
            torch.testing.assert_close(enc.features(x, layer=layer),
                                       enc.norm(outs[layer - 1]), rtol=0, atol=0)
            neg = layer - CFG.depth - 1  # -1 is the last block
            torch.testing.assert_close(enc.features(x, layer=neg, final_norm=False), raw,
                                       rtol=0, atol=0)
        # default = forward, bit for bit
        assert torch.equal(enc.features(x), final)
        # layer 0: patch embedding plus positions, before any block
        tokens = enc.patch_embed.proj(x).flatten(2).transpose(1, 2) + enc.pos_embed[:, 1:]
        zero = enc.features(x, layer=0, final_norm=False)
        torch.testing.assert_close(zero[:, 1:], tokens)
        torch.testing.assert_close(zero[:, :1], (enc.cls_token + enc.pos_embed[:, :1])
                                   .expand(2, -1, -1))
    with pytest.raises(ValueError, match="outside"):
        enc.features(x, layer=CFG.depth + 1)
    with pytest.raises(ValueError, match="outside"):
        enc.features(x, layer=-CFG.depth - 1)


@pytest.mark.parametrize("final_norm", ["norm", "fc_norm"])
def test_default_readout_is_embed(final_norm):
    enc = _encoder(final_norm)
    x = torch.randn(3, 1, 48, 128)
    with torch.no_grad():
        for pooling in ("mean", "cls"):
            assert torch.equal(enc.readout(x, pooling=pooling), enc.embed(x, pooling))
            assert torch.equal(enc.pool_tokens(enc(x), pooling), enc.pool(enc(x), pooling))


def test_final_norm_off_for_fine_tuned_layout():
    enc = _encoder("fc_norm")
    x = torch.randn(2, 1, 48, 128)
    with torch.no_grad():
        outs, _ = _block_outputs(enc, x)
        got = enc.readout(x, final_norm=False)
        torch.testing.assert_close(got, outs[-1][:, 1:].mean(1), rtol=0, atol=0)
        assert not torch.allclose(got, enc.embed(x))


def test_pooling_over_real_patches_by_hand():
    enc = _encoder()
    grid_t, grid_f = CFG.grid  # 3 x 8
    tokens = torch.randn(4, 1 + grid_t * grid_f, CFG.embed_dim)
    valid = [48, 17, 16, 1]  # all real; 2 time patches (the 2nd partly); 1; 1
    mask = enc.patch_mask(valid)
    assert mask.shape == (4, grid_t * grid_f)
    pooled = enc.pool_tokens(tokens, "mean", mask)
    for b, v in enumerate(valid):
        keep = [k for k in range(grid_t * grid_f)
                if (k // grid_f) * CFG.patch_size < v]  # token k is time patch k // F
        want = torch.stack([tokens[b, 1 + k] for k in keep]).mean(0)
        torch.testing.assert_close(pooled[b], want)
    assert [int(mask[b].sum()) for b in range(4)] == [24, 16, 8, 8]
    # a clip without any real patch falls back to all patches; cls ignores the mask
    none = enc.pool_tokens(tokens[:1], "mean", torch.zeros(1, grid_t * grid_f, dtype=bool))
    torch.testing.assert_close(none, tokens[:1, 1:].mean(1))
    assert torch.equal(enc.pool_tokens(tokens, "cls", mask), tokens[:, 0])
    # through readout: the mask comes from the frame counts
    x = torch.randn(4, 1, 48, 128)
    with torch.no_grad():
        feats = enc.features(x)
        torch.testing.assert_close(enc.readout(x, valid_frames=valid),
                                   enc.pool_tokens(feats, "mean", enc.patch_mask(valid)))


# ---------------------------------------------------------------------------
# through embed.py and the command lines
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("readout")
    rng = np.random.default_rng(2)
    (root / "audio").mkdir()
    entries, labels = [], []
    for c, f in enumerate((400, 2000, 6000)):
        for i in range(5):
            n = int(16000 * rng.uniform(0.15, 0.7))  # many shorter than 48 frames
            t = np.arange(n) / 16000
            wav = 0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(n)
            sf.write(root / "audio" / f"c{c}_{i}.wav", wav.astype(np.float32), 16000,
                     subtype="PCM_16")
            entries.append((f"c{c}_{i}.wav", n))
            labels.append([f"tone{f}"])
    write_manifest(root / "toy.tsv", root / "audio", entries)
    write_labels(root / "toy.label", labels)
    write_random_audiomae(root / "enc.pth", CFG, seed=0)
    return root


def test_readout_fields_reach_the_embeddings_and_the_cache_key(toy):
    manifest = toy / "toy.tsv"
    base = EmbedConfig(num_frames=48, batch_size=4)
    enc = load_encoder(toy / "enc.pth", base)
    default = embed_manifest(enc, manifest, base, progress=False)
    variants = [EmbedConfig(num_frames=48, batch_size=4, layer=1),
                EmbedConfig(num_frames=48, batch_size=4, final_norm=False),
                EmbedConfig(num_frames=48, batch_size=4, pool_real_patches=True)]
    keys = {cache_key(toy / "enc.pth", manifest, c) for c in [base] + variants}
    assert len(keys) == 4
    for c in variants:
        assert not np.allclose(embed_manifest(enc, manifest, c, progress=False), default)
    # real-patch pooling of one short clip, by hand from the encoder's tokens
    from uamix_fairseq.tools.embed import clip_dataset, iter_clip_batches
    from uamix_fairseq.audio.frontend import batch_fbank, model_input

    real = embed_manifest(enc, manifest, variants[2], progress=False)
    frontend = base.frontend()
    ids, wav, lengths = next(iter_clip_batches(clip_dataset(manifest, base), [0, 1], 2))
    fb, valid = batch_fbank(wav, lengths, frontend)
    with torch.no_grad():
        tokens = enc(model_input(fb, frontend))
    for row in range(2):
        t_real = -(-int(valid[row]) // 16)  # time patches with a real frame
        want = tokens[row, 1:1 + t_real * 8].mean(0).numpy()
        np.testing.assert_allclose(real[row], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(default[row], tokens[row, 1:].mean(0).numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_one_file_with_several_readouts_in_one_run(toy, tmp_path, capsys):
    out = tmp_path / "fs"
    enc = str(toy / "enc.pth")
    argv = ["--encoder", enc, "--encoder", enc, "--encoder", enc,
            "--readout", "default", "--readout", "layer=1,final_norm=off",
            "--readout", "real_patches=on", "--manifest", str(toy / "toy.tsv"),
            "--ways", "3", "--shots", "1", "--queries", "2", "--episodes", "10",
            "--classifier", "ncm", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out), "--no-progress"]
    assert fewshot.main(argv) == 0
    data = json.loads((out / "fewshot.json").read_text())
    names = [e["name"] for e in data["encoders"]]
    assert names == ["enc", "enc@layer=1,final_norm=off", "enc@real_patches=on"]
    assert [e["readout"] for e in data["encoders"]] == [
        "default", "layer=1,final_norm=off", "real_patches=on"]
    emb = data["settings"]["embeddings"]
    assert emb[names[1]]["layer"] == 1 and emb[names[1]]["final_norm"] is False
    assert emb[names[2]]["pool_real_patches"] is True
    assert len(os.listdir(tmp_path / "cache")) == 3  # three readouts, three entries
    by = {r["encoder"]: r for r in data["results"]}
    assert by[names[1]]["diff_vs"] == "enc" and by[names[1]]["n"] == 10
    assert set(data["diagnostics"]) == set(names)
    # the global flags set the readout of every encoder without --readout
    out2 = tmp_path / "fs2"
    argv2 = ["--encoder", enc, "--layer", "-2", "--no-final-norm", "--pool-real-patches",
             "--manifest", str(toy / "toy.tsv"), "--ways", "3", "--shots", "1",
             "--queries", "2", "--episodes", "10", "--classifier", "ncm",
             "--cache-dir", str(tmp_path / "cache"), "--out", str(out2), "--no-progress"]
    assert fewshot.main(argv2) == 0
    cfg = json.loads((out2 / "fewshot.json").read_text())["settings"]["embedding"]
    assert (cfg["layer"], cfg["final_norm"], cfg["pool_real_patches"]) == (-2, False, True)
    # errors: wrong count, bad key, layer beyond the depth
    capsys.readouterr()
    assert fewshot.main(argv2 + ["--readout", "a", "--readout", "b"]) == 2
    assert "--readout value(s)" in capsys.readouterr().err
    assert fewshot.main(argv2 + ["--readout", "depth=3"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert fewshot.main(argv2 + ["--readout", "layer=9"]) == 2
    assert "outside [-3, 3]" in capsys.readouterr().err


def test_fewshot_and_embed_use_the_encoders_own_length_by_default(toy, tmp_path):
    enc = str(toy / "enc.pth")
    manifest = str(toy / "toy.tsv")
    args = fewshot.build_parser().parse_args(
        ["--encoder", enc, "--manifest", manifest, "--out", str(tmp_path)])
    assert args.num_frames is None
    (cfg,) = _cli.encoder_configs(args, [enc])
    _, embed_cfg, _ = prepare_encoder(enc)
    assert cfg == embed_cfg and cfg.num_frames == CFG.num_frames
    emb_embed, _ = embed_clips(enc, manifest, progress=False)
    (emb_fewshot,) = _cli.embed_all([enc], ["enc"], manifest, [cfg], args, 15)
    np.testing.assert_array_equal(emb_fewshot, emb_embed)
    # the user can still override, in both tools
    args = fewshot.build_parser().parse_args(
        ["--encoder", enc, "--manifest", manifest, "--out", str(tmp_path),
         "--num-frames", "64"])
    (cfg64,) = _cli.encoder_configs(args, [enc])
    assert cfg64.num_frames == 64 == prepare_encoder(enc, num_frames=64)[1].num_frames


def test_replaced_audio_file_is_embedded_again(toy, tmp_path):
    # a private copy of the corpus: one file is overwritten behind the same manifest
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(toy / "audio", root / "audio")
    text = (toy / "toy.tsv").read_text().splitlines()
    (root / "toy.tsv").write_text("\n".join([str(root / "audio")] + text[1:]) + "\n")
    manifest = root / "toy.tsv"
    cfg = EmbedConfig(num_frames=48, batch_size=8)
    cache = tmp_path / "cache"
    first = cached_embeddings(toy / "enc.pth", manifest, cfg, cache_dir=cache, progress=False)
    key = cache_key(toy / "enc.pth", manifest, cfg)
    assert np.array_equal(cached_embeddings(toy / "enc.pth", manifest, cfg,
                                            cache_dir=cache, progress=False), first)
    name = text[1].split("\t")[0]
    path = root / "audio" / name
    wav, sr = sf.read(path, dtype="float32")
    st = os.stat(path)
    sf.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, wav.shape).astype(np.float32),
             sr, subtype="PCM_16")  # same length, so the same size and manifest line
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    assert os.stat(path).st_size == st.st_size
    assert cache_key(toy / "enc.pth", manifest, cfg) != key
    second = cached_embeddings(toy / "enc.pth", manifest, cfg, cache_dir=cache,
                               progress=False)
    assert not np.allclose(second[0], first[0])
    np.testing.assert_array_equal(second[1:], first[1:])
    fresh = embed_manifest(load_encoder(toy / "enc.pth", cfg), manifest, cfg, progress=False)
    np.testing.assert_array_equal(second, fresh)
