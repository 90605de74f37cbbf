import argparse
import pickle

import pytest
import torch

from uamix_fairseq.modules.audiomae import (
    AudioMAEEncoder, CheckpointError, EncoderConfig, load_audiomae, resize_pos_embed,
    save_audiomae, write_random_audiomae,
)


def _official_finetuned(tmp_path, cfg):
    """A fine-tuned AudioMAE file: fc_norm + head, no norm."""
    enc = AudioMAEEncoder(cfg, final_norm="fc_norm")
    state = dict(enc.state_dict())
    state["head.weight"] = torch.randn(527, cfg.embed_dim)
    state["head.bias"] = torch.zeros(527)
    path = tmp_path / "finetuned.pth"
    torch.save({"model": state, "args": argparse.Namespace(nb_classes=527), "epoch": 3}, path)
    return enc, path


def test_pretrained_file_loads_ignoring_decoder(tmp_path, tiny_cfg):
    path = tmp_path / "pretrained.pth"
    ref = write_random_audiomae(path, tiny_cfg, seed=3)
    enc = load_audiomae(path)
    assert enc.cfg.embed_dim == 64 and enc.depth == 4 and enc.cfg.num_frames == 32
    assert enc.cfg.num_heads == 1  # 64 / 64: AudioMAE's head size
    x = torch.randn(2, 1, 32, 128)
    ref.eval(), enc.eval()
    # Different head counts give different outputs, so compare with matching heads.
    enc2 = load_audiomae(path, num_heads=2)
    assert torch.equal(enc2(x), ref(x))
    assert enc(x).shape == (2, 1 + 2 * 8, 64)


def test_finetuned_file_uses_fc_norm(tmp_path, tiny_cfg):
    ref, path = _official_finetuned(tmp_path, tiny_cfg)
    enc = load_audiomae(path, num_heads=2)
    assert enc.final_norm == "fc_norm"
    x = torch.randn(3, 1, 32, 128)
    tokens = enc(x)
    expected = ref.fc_norm(tokens[:, 1:].mean(1))
    torch.testing.assert_close(enc.embed(x), expected)


def test_bare_state_dict_and_module_prefix(tmp_path, tiny_cfg):
    enc = AudioMAEEncoder(tiny_cfg)
    path = tmp_path / "bare.pt"
    torch.save({f"module.{k}": v for k, v in enc.state_dict().items()}, path)
    loaded = load_audiomae(path, num_heads=2)
    x = torch.randn(1, 1, 32, 128)
    assert torch.equal(loaded(x), enc(x))


def test_save_and_reload_give_identical_outputs(tmp_path, tiny_cfg):
    enc = AudioMAEEncoder(tiny_cfg)
    save_audiomae(enc, tmp_path / "out.pth")
    obj = torch.load(tmp_path / "out.pth", weights_only=True)
    assert set(obj["model"]) == set(enc.state_dict())  # official key names
    loaded = load_audiomae(tmp_path / "out.pth")  # head count stored in the file
    assert loaded.cfg.num_heads == 2
    x = torch.randn(2, 1, 32, 128)
    assert torch.equal(loaded(x), enc(x))


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_audiomae(path)


def test_wrong_architecture_lists_keys(tmp_path, tiny_cfg):
    enc = AudioMAEEncoder(tiny_cfg)
    state = dict(enc.state_dict())
    del state["blocks.1.mlp.fc2.bias"]
    state["blocks.0.attn.extra"] = torch.zeros(3)
    state["blocks.2.norm1.weight"] = torch.zeros(10)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as e:
        load_audiomae(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "missing (1): blocks.1.mlp.fc2.bias" in msg
    assert "unexpected (1): blocks.0.attn.extra" in msg
    assert "mis-shaped (1): blocks.2.norm1.weight" in msg


def test_not_an_encoder(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match="does not look like an AudioMAE encoder"):
        load_audiomae(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_audiomae(tmp_path / "missing.pth")


def test_pos_embed_crop_and_interpolate(tmp_path, tiny_cfg):
    path = tmp_path / "p.pth"
    write_random_audiomae(path, tiny_cfg)
    table = torch.load(path, weights_only=False)["model"]["pos_embed"]  # grid 2 x 8
    short = load_audiomae(path, num_frames=16)
    assert short.pos_embed.shape == (1, 1 + 8, 64)
    assert torch.equal(short.pos_embed, table[:, :9])  # crop keeps exact positions
    long = load_audiomae(path, num_frames=48)  # 3 x 8
    grid = long.pos_embed[0, 1:].reshape(3, 8, 64)
    old = table[0, 1:].reshape(2, 8, 64)
    torch.testing.assert_close(grid[0], old[0])
    torch.testing.assert_close(grid[2], old[1])
    torch.testing.assert_close(grid[1], (old[0] + old[1]) / 2)
    with pytest.raises(CheckpointError, match="frequency patches"):
        resize_pos_embed(table, (2, 8), (2, 4))


def test_token_order_is_time_major(tiny_cfg):
    """Token k is the patch at (t = k // 8, f = k % 8) (docs/audiomae_format.md,
    "Geometry")."""
    enc = AudioMAEEncoder(tiny_cfg)
    x = torch.zeros(1, 1, 32, 128)
    x[0, 0, 16:32, 48:64] = 1.0  # patch (t=1, f=3)
    out = enc.patch_embed(x)[0]  # [16, D]
    bias = enc.patch_embed.proj.bias
    changed = [k for k in range(16) if not torch.allclose(out[k], bias)]
    assert changed == [1 * 8 + 3]


def test_attention_matches_explicit_softmax(tiny_cfg):
    enc = AudioMAEEncoder(tiny_cfg)
    attn = enc.blocks[0].attn
    x = torch.randn(2, 5, 64)
    qkv = attn.qkv(x).reshape(2, 5, 3, 2, 32)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, L, H, d]
    w = torch.einsum("blhd,bmhd->bhlm", q, k) / 32 ** 0.5
    o = torch.einsum("bhlm,bmhd->blhd", w.softmax(-1), v).reshape(2, 5, 64)
    torch.testing.assert_close(attn(x), attn.proj(o), atol=1e-5, rtol=1e-5)


def test_frozen_prefix_has_no_autograd_and_same_values(tiny_cfg):
    enc = AudioMAEEncoder(tiny_cfg)
    x = torch.randn(2, 1, 32, 128)
    full = enc(x)
    part = enc(x, trainable_blocks=1)
    torch.testing.assert_close(full, part)
    part.sum().backward()
    for i, blk in enumerate(enc.blocks):
        grads = [p.grad for p in blk.parameters()]
        if i < 3:
            assert all(g is None for g in grads), f"frozen block {i} got a gradient"
        else:
            assert all(g is not None for g in grads)
    assert enc.patch_embed.proj.weight.grad is None and enc.cls_token.grad is None
    none = enc(x, trainable_blocks=0)
    assert not none.requires_grad
    with pytest.raises(ValueError, match="trainable_blocks"):
        enc(x, trainable_blocks=5)


def _direct_tokens(enc, x, keep=None, n_blocks=None, final_norm=True):
    """The encoder's computation written out: patches + positions, optional gather of
    ``keep``, cls (+ its position) first, the blocks, the final norm."""
    tokens = enc.patch_embed.proj(x).flatten(2).transpose(1, 2) + enc.pos_embed[:, 1:]
    if keep is not None:
        tokens = torch.stack([t[k] for t, k in zip(tokens, keep)])
    h = torch.cat([(enc.cls_token + enc.pos_embed[:, :1]).expand(len(x), -1, -1), tokens], 1)
    for blk in enc.blocks[:n_blocks]:
        h = blk(h)
    return enc.norm(h) if final_norm and enc.final_norm == "norm" else h


def test_forward_keep_runs_only_the_kept_patches(tiny_cfg):
    enc = AudioMAEEncoder(tiny_cfg).eval()
    x = torch.randn(2, 1, 32, 128)
    n = tiny_cfg.num_patches
    keep = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(i))[:5]
                        for i in range(2)])
    with torch.no_grad():
        assert torch.equal(enc(x), _direct_tokens(enc, x))
        out = enc(x, keep=keep)
        assert out.shape == (2, 1 + 5, 64)
        assert torch.equal(out, _direct_tokens(enc, x, keep))
        # Every patch, in token order: the plain forward.
        assert torch.equal(enc(x, keep=torch.arange(n).expand(2, n)), enc(x))
        # The frozen prefix filters the same way and computes the same values.
        torch.testing.assert_close(enc(x, trainable_blocks=1, keep=keep), out)
        # A readout stops after block 2, without the final norm.
        assert torch.equal(enc(x, layer=2, final_norm=False),
                           _direct_tokens(enc, x, n_blocks=2, final_norm=False))
    with pytest.raises(ValueError, match="keep"):
        enc(x, keep=keep[0])


def test_parameter_units_and_no_weight_decay(tiny_cfg):
    for final_norm in ("norm", "fc_norm"):
        enc = AudioMAEEncoder(tiny_cfg, final_norm=final_norm)
        names = [n for n, _ in enc.named_parameters()]
        units = enc.parameter_units()
        assert sorted(units) == sorted(names)
        # By hand: block i, the final norm, everything else is the embedding.
        for n in names:
            want = (f"block.{n.split('.')[1]}" if n.startswith("blocks.")
                    else "encoder.norm" if n.startswith(final_norm + ".")
                    else "encoder.embed")
            assert units[n] == want, n
        assert enc.units() == ["encoder.embed", "block.0", "block.1", "block.2", "block.3",
                               "encoder.norm"]
        assert set(units.values()) == set(enc.units())
        params = dict(enc.named_parameters())
        assert enc.no_weight_decay() == {"cls_token"} | {
            n for n, p in params.items() if p.ndim <= 1}
        assert f"{final_norm}.weight" in enc.no_weight_decay()
        assert "blocks.0.attn.qkv.weight" not in enc.no_weight_decay()
        assert enc.frozen_units(4) == {"encoder.embed"}
        assert enc.frozen_units(1) == {"encoder.embed", "block.0", "block.1", "block.2"}
        assert enc.frozen_units(0) == set(enc.units())
        frozen = {n for n, p in params.items()
                  if any(p is q for q in enc.frozen_parameters(1))}
        assert frozen == {n for n in names if n.startswith(("cls_token", "patch_embed.",
                                                             "blocks.0.", "blocks.1.",
                                                             "blocks.2."))}


def test_input_shape_errors(tiny_cfg):
    enc = AudioMAEEncoder(tiny_cfg)
    with pytest.raises(ValueError, match=r"\[B, 1, T, F\]"):
        enc(torch.randn(2, 32, 128))
    with pytest.raises(ValueError, match="64 frames"):
        enc(torch.randn(1, 1, 64, 128))


def test_pooling(tiny_cfg):
    enc = AudioMAEEncoder(tiny_cfg)
    x = torch.randn(2, 1, 32, 128)
    tokens = enc(x)
    torch.testing.assert_close(enc.embed(x), tokens[:, 1:].mean(1))
    torch.testing.assert_close(enc.embed(x, "cls"), tokens[:, 0])
    assert EncoderConfig().num_patches == 512
