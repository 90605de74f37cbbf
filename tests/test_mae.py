"""AudioMAE's masked-autoencoder objective: masking, patch order, the loss, and
(continued) pretraining through fairseq-hydra-train with configs/mae_demo.yaml."""

import os
import shutil

import pytest
import torch

import uamix_fairseq  # noqa: F401  (registers the components)
from uamix_fairseq.modules.audiomae import (AudioMAEEncoder, EncoderConfig, load_audiomae,
                                    save_audiomae, write_random_audiomae)
from uamix_fairseq.modules.mae import (MAEDecoder, encode_visible, mask_tokens, masked_mse,
                               normalized_targets, patchify, random_masking, unpatchify,
                               visible_count, window_attention_mask)

from fairseq_helpers import REPO, USER_DIR, run_train


# ------------------------------------------------------------------ plain PyTorch
def test_random_masking_keeps_exact_count_and_differs_per_clip():
    b, n, d = 6, 40, 3
    tokens = torch.arange(b * n * d, dtype=torch.float32).reshape(b, n, d)
    for ratio in (0.8, 0.75, 0.5):
        g = torch.Generator().manual_seed(0)
        visible, mask, ids_restore = random_masking(tokens, ratio, g)
        keep = round(n * (1 - ratio))
        assert visible.shape == (b, keep, d)
        assert torch.equal(mask.sum(dim=1), torch.full((b,), float(n - keep)))
        # Visible tokens are exactly the unmasked ones of each clip.
        for i in range(b):
            kept_ids = (visible[i, :, 0] - tokens[i, 0, 0]).long() // d
            assert set(kept_ids.tolist()) == set(torch.nonzero(mask[i] == 0).flatten().tolist())
            assert sorted(ids_restore[i].tolist()) == list(range(n))
        masks = {tuple(m.tolist()) for m in mask}
        assert len(masks) == b, "clips share a mask"
    # Same generator seed: same masks.
    m1 = random_masking(tokens, 0.8, torch.Generator().manual_seed(3))[1]
    m2 = random_masking(tokens, 0.8, torch.Generator().manual_seed(3))[1]
    assert torch.equal(m1, m2)
    with pytest.raises(ValueError):
        random_masking(tokens, 1.0)


@pytest.mark.parametrize("mode,ratios,hidden_t,hidden_f", [
    ("time", (0.5, 0.0, 0.0), 3, 0),            # 3 of 6 time columns
    ("frequency", (0.75, 0.0, 0.0), 0, 3),      # 3 of 4 frequency rows
    ("time_frequency", (0.0, 0.34, 0.5), 2, 2),  # round(6 * 0.34) = 2 columns, 2 rows
])
def test_stripe_masking_hides_whole_columns_and_rows(mode, ratios, hidden_t, hidden_f):
    gt, gf, b = 6, 4, 5
    tokens = torch.arange(b * gt * gf, dtype=torch.float32).reshape(b, gt * gf, 1)
    visible, mask, ids_restore = mask_tokens(tokens, (gt, gf), mode, *ratios,
                                             generator=torch.Generator().manual_seed(1))
    keep = (gt - hidden_t) * (gf - hidden_f)
    assert visible.shape == (b, keep, 1) == (b, visible_count((gt, gf), mode, *ratios), 1)
    grid = mask.reshape(b, gt, gf).bool()
    for i in range(b):
        full_t = grid[i].all(dim=1)  # time columns masked across all frequencies
        full_f = grid[i].all(dim=0)
        assert int(full_t.sum()) >= hidden_t and int(full_f.sum()) >= hidden_f
        # Masked = union of the hidden columns and rows, nothing else.
        cols = full_t if hidden_t else torch.zeros(gt, dtype=torch.bool)
        rows = full_f if hidden_f else torch.zeros(gf, dtype=torch.bool)
        assert torch.equal(grid[i], cols[:, None] | rows[None, :])
        kept = set((visible[i, :, 0] - tokens[i, 0, 0]).long().tolist())
        assert kept == set(torch.nonzero(mask[i] == 0).flatten().tolist())
        assert sorted(ids_restore[i].tolist()) == list(range(gt * gf))
    # Restoring the shuffled order puts every token back in place.
    shuffled = torch.cat([visible, torch.full((b, gt * gf - keep, 1), -1.0)], dim=1)
    back = shuffled.gather(1, ids_restore[:, :, None])
    assert torch.equal(back[mask == 0], tokens[mask == 0])
    with pytest.raises(ValueError, match="no visible patch"):
        mask_tokens(tokens, (gt, gf), "frequency", 0.9)
    with pytest.raises(ValueError, match="mask mode"):
        mask_tokens(tokens, (gt, gf), "diagonal")


def test_window_attention_mask_by_hand():
    # Grid 4 x 2, windows of 2 x 2: patches {0,1,2,3} and {4,5,6,7} (+1 for cls).
    m = window_attention_mask((4, 2), (2, 2))
    assert m[0].tolist() == [True] + [False] * 8 and m[:, 0].sum() == 1
    assert m[1:, 1:].int().tolist() == [[1] * 4 + [0] * 4] * 4 + [[0] * 4 + [1] * 4] * 4
    # Shifted by (1, 1): time rows {0}, {1, 2}, {3}; frequency {0}, {1}.
    s = window_attention_mask((4, 2), (2, 2), shift=True)[1:, 1:]
    groups = {tuple(torch.nonzero(row).flatten().tolist()) for row in s}
    assert groups == {(0,), (1,), (2, 4), (3, 5), (6,), (7,)}
    assert torch.equal(s, s.t())


def test_local_decoder_is_local():
    torch.manual_seed(0)
    grid = (4, 4)
    dec = MAEDecoder(8, 8, 1, 2, 4, grid, window=(2, 2)).eval()
    latent = torch.randn(1, 1 + 16, 8)
    ids = torch.arange(16)[None]
    out = dec(latent, ids)
    changed = latent.clone()
    changed[0, 1] += 1.0  # patch 0 (t 0, f 0): in the window of patches 0, 1, 4, 5
    diff = (dec(changed, ids) - out).abs().amax(dim=-1)[0]
    assert set(torch.nonzero(diff > 1e-6).flatten().tolist()) == {0, 1, 4, 5}
    assert not any("window" in k for k in dec.state_dict())
    glob = MAEDecoder(8, 8, 1, 2, 4, grid).eval()
    glob.load_state_dict(dec.state_dict())
    assert (glob(changed, ids) - glob(latent, ids)).abs().amax(dim=-1).min() > 1e-6


def test_patchify_token_order_and_round_trip():
    p, t, f = 4, 12, 8  # grid 3 x 2
    x = torch.randn(2, 1, t, f)
    patches = patchify(x, p)
    assert patches.shape == (2, 6, 16)
    for k in range(6):
        ti, fi = k // (f // p), k % (f // p)
        expected = x[:, 0, ti * p:(ti + 1) * p, fi * p:(fi + 1) * p].reshape(2, -1)
        assert torch.equal(patches[:, k], expected)
    assert torch.equal(unpatchify(patches, p, t, f), x)
    # The encoder's conv patch embedding sees the same patches in the same order.
    enc = AudioMAEEncoder(EncoderConfig(embed_dim=8, depth=1, num_heads=2, patch_size=p,
                                        num_frames=t, num_mel_bins=f))
    conv = enc.patch_embed(x)
    w = enc.patch_embed.proj.weight.reshape(8, -1)
    linear = patches @ w.T + enc.patch_embed.proj.bias
    assert torch.allclose(conv, linear, atol=1e-5)


def test_normalised_targets_by_hand():
    patch = torch.tensor([[[1.0, 2.0, 3.0, 6.0]]])  # mean 3, unbiased var 14/3
    mean, var = 3.0, ((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3
    expected = torch.tensor([[[(v - mean) / (var + 1e-6) ** 0.5 for v in (1, 2, 3, 6)]]])
    assert torch.allclose(normalized_targets(patch), expected, atol=1e-6)
    pred = torch.zeros(1, 1, 4)
    mask = torch.ones(1, 1)
    assert torch.allclose(masked_mse(pred, patch, mask, norm_pix=True),
                          (expected ** 2).mean(), atol=1e-6)
    assert torch.allclose(masked_mse(pred, patch, mask, norm_pix=False),
                          torch.tensor((1 + 4 + 9 + 36) / 4.0))


def test_loss_counts_masked_patches_only():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 10, 16, generator=g)
    target = torch.randn(3, 10, 16, generator=g)
    mask = (torch.rand(3, 10, generator=g) > 0.5).float()
    mask[:, 0] = 1
    loss = masked_mse(pred, target, mask)
    changed = pred.clone()
    changed[mask == 0] += 100.0
    assert torch.allclose(masked_mse(changed, target, mask), loss)
    changed = pred.clone()
    changed[mask == 1] += 1.0
    assert not torch.allclose(masked_mse(changed, target, mask), loss)
    # By hand: mean over masked patches of the per-patch mean squared error.
    norm = normalized_targets(target)
    per_patch = ((pred - norm) ** 2).mean(-1)
    assert torch.allclose(loss, per_patch[mask == 1].mean())


def test_decoder_keys_and_visible_encoding():
    cfg = EncoderConfig(embed_dim=16, depth=2, num_heads=2, num_frames=32, num_mel_bins=32)
    enc = AudioMAEEncoder(cfg)
    dec = MAEDecoder(16, 8, 1, 2, cfg.patch_size, cfg.grid)
    keys = set(dec.state_dict())
    for k in ("mask_token", "decoder_embed.weight", "decoder_pos_embed",
              "decoder_blocks.0.attn.qkv.weight", "decoder_norm.weight", "decoder_pred.weight"):
        assert k in keys
    x = torch.randn(2, 1, 32, 32)
    latent, mask, ids_restore = encode_visible(enc, x, 0.75, torch.Generator().manual_seed(0))
    assert latent.shape == (2, 1 + 1, 16)  # 4 patches, 1 visible, plus cls
    assert dec(latent, ids_restore).shape == (2, 4, 256)
    # Nothing masked: the same as the encoder's own forward, up to token order.
    latent, _, ids_restore = encode_visible(enc, x, 0.0, torch.Generator().manual_seed(0))
    full = enc(x)
    restored = latent[:, 1:].gather(1, ids_restore[:, :, None].expand(-1, -1, 16))
    assert torch.allclose(restored, full[:, 1:], atol=1e-5)
    assert torch.allclose(latent[:, 0], full[:, 0], atol=1e-5)


@pytest.mark.parametrize("mode, ratios", [("random", (0.75, 0.0, 0.0)),
                                           ("time_frequency", (0.0, 0.25, 0.5))])
def test_encode_visible_is_the_encoder_on_the_masked_tokens(mode, ratios):
    """Against the computation written out: patches + positions, ``mask_tokens`` on
    them with the same generator, cls first, blocks, final norm (drop path on, train
    mode, the same global seed)."""
    cfg = EncoderConfig(embed_dim=16, depth=2, num_heads=2, num_frames=64, num_mel_bins=32,
                        drop_path_rate=0.3)
    torch.manual_seed(0)
    enc = AudioMAEEncoder(cfg).train()
    x = torch.randn(3, 1, 64, 32)
    torch.manual_seed(1)
    latent, mask, ids = encode_visible(enc, x, ratios[0], torch.Generator().manual_seed(2),
                                       mode, ratios[1], ratios[2])
    torch.manual_seed(1)
    tokens = enc.patch_embed(x) + enc.pos_embed[:, 1:]
    visible, mask_ref, ids_ref = mask_tokens(tokens, cfg.grid, mode, *ratios,
                                             generator=torch.Generator().manual_seed(2))
    h = torch.cat([(enc.cls_token + enc.pos_embed[:, :1]).expand(3, -1, -1), visible], 1)
    for blk in enc.blocks:
        h = blk(h)
    assert torch.equal(latent, enc.norm(h))
    assert torch.equal(mask, mask_ref) and torch.equal(ids, ids_ref)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    cfg = EncoderConfig(embed_dim=32, depth=2, num_heads=2, num_frames=32, num_mel_bins=32)
    enc = AudioMAEEncoder(cfg)
    dec = MAEDecoder(32, 16, 1, 2, cfg.patch_size, cfg.grid)
    x = torch.randn(4, 1, 32, 32)
    opt = torch.optim.AdamW([*enc.parameters(), *dec.parameters()], lr=1e-3)

    def loss_at(seed):
        latent, mask, ids = encode_visible(enc, x, 0.5, torch.Generator().manual_seed(seed))
        return masked_mse(dec(latent, ids), patchify(x, cfg.patch_size), mask)

    first = loss_at(0).item()
    for _ in range(30):
        opt.zero_grad()
        loss_at(0).backward()
        opt.step()
    assert loss_at(0).item() < 0.8 * first


# ------------------------------------------------------------------ fairseq
TINY = EncoderConfig(embed_dim=64, depth=2, num_heads=1, num_frames=32)


def _overrides(corpus, save_dir, ckpt=""):
    args = {
        "task.data": corpus, "task.num_frames": 32,
        "model.audiomae_checkpoint": f"'{ckpt}'" if ckpt else "''",
        "model.embed_dim": 64, "model.depth": 2, "model.num_heads": 1,
        "model.decoder_embed_dim": 32, "model.decoder_depth": 1, "model.decoder_num_heads": 1,
        "common.user_dir": USER_DIR, "common.log_interval": 1,
        "checkpoint.save_dir": save_dir, "checkpoint.save_interval_updates": 2,
        "dataset.batch_size": 4, "dataset.validate_interval_updates": 2,
        "optimization.max_update": 4, "lr_scheduler.warmup_updates": 1,
    }
    return [f"++{k}={v}" for k, v in args.items()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mae")
    corpus = str(root / "corpus")
    import subprocess
    import sys
    subprocess.run([sys.executable, os.path.join(REPO, "examples", "demo", "demo_data.py"), corpus,
                    "--clips-per-class", "4", "--heldout-clips-per-class", "1",
                    "--seconds", "0.5"], check=True,
                   capture_output=True)
    ckpt = str(root / "tiny.pth")
    write_random_audiomae(ckpt, TINY, seed=0)  # decoder_embed 32 x 64, decoder_pred 256 x 32
    return root, corpus, ckpt


@pytest.mark.parametrize("start", ["scratch", "file"])
def test_fairseq_pretraining_and_export(setup, start, tmp_path):
    root, corpus, ckpt = setup
    save_dir = str(tmp_path / "ckpt")
    extra = []
    if start == "file":  # also the structured masks and the local decoder
        extra = ["++model.mask_mode=time", "++model.mask_ratio=0.5",
                 "++model.decoder_window_time=2", "++model.decoder_window_freq=4"]
    code, log = run_train(_overrides(corpus, save_dir, ckpt if start == "file" else "") + extra,
                          cwd=str(tmp_path), config_name="mae_demo")
    assert code == 0, log[-4000:]
    # 12 of 16 patches (from scratch, random at the yaml's 0.75) or 1 of 2 time columns.
    ratio = "0.75" if start == "scratch" else "0.5"
    assert "num_updates=4" in log and "loss=" in log and f"mask_ratio={ratio}" in log
    last = os.path.join(save_dir, "checkpoint_last.pt")
    state = torch.load(last, map_location="cpu", weights_only=False)["model"]
    assert "decoder.mask_token" in state and "encoder.blocks.1.attn.qkv.weight" in state
    if start == "file":
        # mask_token is not loaded: write_random_audiomae stores it at encoder width.
        assert "decoder entries loaded: 2" in log
        original = torch.load(ckpt, weights_only=False)["model"]
        first = torch.load(os.path.join(save_dir, "checkpoint_1_2.pt"),
                           weights_only=False)["model"]
        # Continued from the file: its decoder entries were loaded, then trained.
        assert first["decoder.decoder_embed.weight"].shape == original["decoder_embed.weight"].shape
        assert (first["decoder.decoder_pred.weight"]
                - original["decoder_pred.weight"]).abs().max() < 0.05
        assert torch.equal(state["encoder.pos_embed"], original["pos_embed"])
        assert not torch.equal(state["encoder.blocks.0.attn.qkv.weight"],
                               original["blocks.0.attn.qkv.weight"])

    # Rebuilds without the original file (task state).
    from fairseq import checkpoint_utils
    if start == "file":
        shutil.move(ckpt, ckpt + ".gone")
    try:
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([last])
    finally:
        if start == "file":
            shutil.move(ckpt + ".gone", ckpt)
    model = models[0].eval()

    # Export: load_audiomae reads the encoder out of the fairseq checkpoint.
    enc = load_audiomae(last).eval()
    exported = str(tmp_path / "exported.pth")
    save_audiomae(enc, exported)
    again = load_audiomae(exported).eval()
    x = torch.randn(3, 1, 32, 128)
    with torch.no_grad():
        assert torch.equal(enc(x), again(x))
        assert torch.allclose(enc(x), model.encoder(x), atol=1e-6)


def test_export_keeps_the_mae_decoder(tmp_path):
    """`python -m uamix_fairseq.tools.export` on an MAE checkpoint writes the decoder too, in
    the official layout, and load_audiomae still reads the encoder alone."""
    from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig, load_audiomae
    from uamix_fairseq.tools.export import main as export_main
    from uamix_fairseq.modules.mae import MAEDecoder

    enc = AudioMAEEncoder(EncoderConfig(embed_dim=64, depth=2, num_heads=1, num_frames=32))
    dec = MAEDecoder(64, 32, depth=1, num_heads=1, patch_size=16, grid=(2, 8))
    state = {**{f"encoder.{k}": v for k, v in enc.state_dict().items()},
             **{f"decoder.{k}": v for k, v in dec.state_dict().items()}}
    ckpt = tmp_path / "checkpoint_last.pt"
    torch.save({"model": state, "cfg": {"model": {"encoder_args": {
        "config": {"embed_dim": 64, "depth": 2, "num_heads": 1, "num_frames": 32},
        "final_norm": "norm"}}}}, ckpt)
    out = tmp_path / "exported.pth"
    assert export_main([str(ckpt), str(out)]) == 0
    saved = torch.load(out, weights_only=True)["model"]
    for k, v in dec.state_dict().items():
        assert torch.equal(saved[k], v), k
    x = torch.randn(2, 1, 32, 128)
    assert torch.equal(load_audiomae(out)(x), enc(x))
    fresh = MAEDecoder(64, 32, depth=1, num_heads=1, patch_size=16, grid=(2, 8))
    loaded, skipped = fresh.load_matching(saved)
    assert sorted(loaded) == sorted(dec.state_dict()) and not skipped

