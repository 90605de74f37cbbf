"""The naive joint baseline: model `uamix_audiomae_joint` + criterion `uamix_mae_nnclr`
(MAE loss + NNCLR loss over the whole encoder), directly and through fairseq-hydra-train
with configs/joint_demo.yaml."""

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import uamix_fairseq  # noqa: F401  (registers the components)
from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig, load_audiomae
from uamix_fairseq.criterions.uamix_mae_nnclr import UamixMAENNCLRConfig, UamixMAENNCLRCriterion
from uamix_fairseq.criterions.uamix_nnclr import UamixNNCLRConfig, UamixNNCLRCriterion
from uamix_fairseq.modules.mae import encode_visible, masked_mse, patchify
from uamix_fairseq.models.uamix_audiomae import UamixAudioMAEConfig, UamixAudioMAEModel
from uamix_fairseq.models.uamix_audiomae_joint import (UamixAudioMAEJointConfig,
                                                        UamixAudioMAEJointModel)
from uamix_fairseq.optim.uamix_adamw import UamixAdamW, UamixAdamWConfig

from fairseq_helpers import REPO, make_tiny_setup, run_train, tiny_overrides

FRAMES, B, MASK_RATIO, MAE_WEIGHT = 32, 4, 0.75, 0.7


def _joint_model(**overrides):
    torch.manual_seed(0)
    encoder = AudioMAEEncoder(EncoderConfig(embed_dim=32, depth=2, num_heads=1,
                                            num_frames=FRAMES))
    fields = dict(num_frames=FRAMES, freeze_schedule="[(0, 2)]", proj_hidden_dim=32,
                  pred_hidden_dim=32, proj_out_dim=16, decoder_embed_dim=16,
                  decoder_depth=1, decoder_num_heads=1, mask_ratio=MASK_RATIO)
    fields.update(overrides)
    model = UamixAudioMAEJointModel(UamixAudioMAEJointConfig(**fields), encoder, queue_size=16)
    # A non-empty queue, so that the nearest neighbours are not the rows themselves.
    g = torch.Generator().manual_seed(7)
    model.support_queue.push(F.normalize(torch.randn(6, 16, generator=g), dim=-1),
                             torch.arange(100, 106))
    return model.train()


def _sample():
    g = torch.Generator().manual_seed(11)
    view1 = torch.randn(B, 1, FRAMES, 128, generator=g)
    view2 = torch.randn(B, 1, FRAMES, 128, generator=g)
    return {"id": torch.arange(B), "nsentences": B,
            "net_input": {"view1": view1, "view2": view2}}


def _criteria(update=5):
    joint = UamixMAENNCLRCriterion(UamixMAENNCLRConfig(seed=1, mae_weight=MAE_WEIGHT), None)
    plain = UamixNNCLRCriterion(UamixNNCLRConfig(seed=1), None)
    for c in (joint, plain):
        c.set_num_updates(update)
    return joint, plain


# ------------------------------------------------------------------ loss and gradients
def test_joint_loss_is_contrastive_plus_weighted_mae():
    model, sample = _joint_model(), _sample()
    contrastive_model, mae_model = copy.deepcopy(model), copy.deepcopy(model)
    joint, plain = _criteria()

    loss, sample_size, log = joint(model, sample)

    # Contrastive part: plain uamix_nnclr on a copy (same queue, same mixing draws).
    contrastive, _, plain_log = plain(contrastive_model, sample)
    # MAE part: the masks are the next draws of the criterion's generator after mixing.
    view1 = sample["net_input"]["view1"]
    gen = joint._generator()
    joint.mix(view1, gen)
    latent, mask, ids_restore = encode_visible(mae_model.encoder, view1, MASK_RATIO, gen)
    mae = masked_mse(mae_model.decoder(latent, ids_restore), patchify(view1, 16), mask)
    assert mask.sum(dim=1).tolist() == [12.0] * B  # 16 patches, 4 visible

    assert sample_size == B
    assert torch.allclose(loss, contrastive + MAE_WEIGHT * B * mae, rtol=1e-5, atol=1e-5)
    assert torch.allclose(log["mae_loss"], B * mae.detach(), rtol=1e-5)
    assert torch.allclose(log["clean_loss"], plain_log["clean_loss"])
    assert torch.allclose(log["mix_loss"], plain_log["mix_loss"])
    assert mae.item() > 0.1 and contrastive.item() > 0.1  # both parts present
    # The queue is updated once, as by uamix_nnclr.
    assert torch.equal(model.support_queue.features, contrastive_model.support_queue.features)

    # Another update draws other masks (and mixing), so another MAE loss.
    other, _ = _criteria(update=6)
    _, _, other_log = other(copy.deepcopy(mae_model), sample)
    assert not torch.allclose(other_log["mae_loss"], log["mae_loss"])


def test_every_parameter_gets_gradient_and_changes_after_a_step():
    model, sample = _joint_model(), _sample()
    joint, _ = _criteria()
    assert model.freezing.frozen_parameters() == [] and model.freezing.frozen_units() == set()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(before)  # patch embedding and cls token included
    loss, _, _ = joint(model, sample)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
    # uamix_adamw refuses untagged parameters: every one (decoder included) is tagged.
    optimizer = UamixAdamW(UamixAdamWConfig(lr=[1e-3]), trainable)
    optimizer.step()
    for name, p in model.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} did not change"
    for key in ("encoder.patch_embed.proj.weight", "encoder.cls_token",
                "encoder.blocks.0.attn.qkv.weight", "decoder.mask_token"):
        assert key in before


def test_embedding_lr_follows_layer_decay():
    model = _joint_model(layer_decay=0.5)
    scale = {n: p.optim_overrides["lr_scale"] for n, p in model.named_parameters()}
    assert scale["encoder.blocks.1.mlp.fc1.weight"] == 0.5
    assert scale["encoder.blocks.0.mlp.fc1.weight"] == 0.25
    assert scale["encoder.patch_embed.proj.weight"] == scale["encoder.cls_token"] == 0.125
    assert scale["decoder.decoder_embed.weight"] == scale["head.predictor.0.weight"] == 1.0
    assert model.decoder.mask_token.optim_overrides["weight_decay"] == 0.0


def test_errors_name_the_field():
    with pytest.raises(ValueError, match=r"model.freeze_schedule.*\[\(0, 2\)\]"):
        _joint_model(freeze_schedule="[(0, 0), (3, 2)]")
    with pytest.raises(ValueError, match="model.mask_ratio"):
        _joint_model(mask_ratio=1.0)
    with pytest.raises(ValueError, match="criterion.mae_weight"):
        UamixMAENNCLRCriterion(UamixMAENNCLRConfig(seed=1, mae_weight=-1.0), None)
    encoder = AudioMAEEncoder(EncoderConfig(embed_dim=32, depth=2, num_heads=1,
                                            num_frames=FRAMES))
    plain_model = UamixAudioMAEModel(UamixAudioMAEConfig(
        num_frames=FRAMES, freeze_schedule="[(0, 2)]", proj_hidden_dim=32,
        pred_hidden_dim=32, proj_out_dim=16), encoder, queue_size=16)
    joint, _ = _criteria()
    with pytest.raises(ValueError, match="uamix_audiomae_joint"):
        joint(plain_model, _sample())


def test_joint_demo_config_differs_from_demo_only_in_model_and_criterion():
    demo = OmegaConf.to_container(OmegaConf.load(os.path.join(REPO, "configs", "demo.yaml")))
    joint = OmegaConf.to_container(
        OmegaConf.load(os.path.join(REPO, "configs", "joint_demo.yaml")))
    components = {"model": "uamix_audiomae_joint", "criterion": "uamix_mae_nnclr"}
    joint_defaults, demo_defaults = joint.pop("defaults"), demo.pop("defaults")
    assert [{**d, **{k: components[k] for k in d if k in components}}
            if isinstance(d, dict) else d for d in demo_defaults] == joint_defaults
    assert joint["criterion"] == {} and demo.pop("criterion") == {}
    assert joint["model"].pop("freeze_schedule") == "[(0, 6)]"
    for k in ("decoder_embed_dim", "decoder_depth", "decoder_num_heads"):
        joint["model"].pop(k)
    joint.pop("criterion")
    demo["model"].pop("freeze_schedule")
    assert joint == demo  # data, encoder file, batch, optimizer, steps


# ------------------------------------------------------------------ fairseq
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("joint")
    corpus, ckpt = make_tiny_setup(str(root))  # 4 blocks x 64 dims
    save_dir = str(root / "ckpt")
    overrides = tiny_overrides(corpus, ckpt, save_dir, **{
        "model.freeze_schedule": "'[(0, 4)]'",
        # 32 = 64 / 2: decoder_embed and decoder_pred of the tiny file load.
        "model.decoder_embed_dim": 32, "model.decoder_depth": 1, "model.decoder_num_heads": 1,
        "criterion.mae_weight": 0.5,
        "optimization.max_update": 4, "checkpoint.save_interval_updates": 2,
        "dataset.validate_interval_updates": 2,
    })
    code, log = run_train(overrides, cwd=str(root), config_name="joint_demo")
    assert code == 0, log[-4000:]
    return dict(root=root, ckpt=ckpt, save_dir=save_dir, log=log)


def test_fairseq_joint_training_trains_the_whole_encoder(trained):
    log = trained["log"]
    for key in ("mae_loss=", "clean_loss=", "mix_loss=", "queue_fill=", "trainable_blocks=4"):
        assert key in log
    assert "num_updates=4" in log and "decoder entries loaded: 2" in log
    original = torch.load(trained["ckpt"], weights_only=False)["model"]
    state = torch.load(os.path.join(trained["save_dir"], "checkpoint_last.pt"),
                       weights_only=False)["model"]
    encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    assert set(encoder) == {k for k in original if not k.startswith(("mask_token", "decoder"))}
    for k, v in encoder.items():
        if k == "pos_embed":  # fixed sin-cos table
            assert torch.equal(v, original[k])
        else:
            assert not torch.equal(v, original[k]), f"{k} did not train"
    assert "decoder.mask_token" in state and "head.predictor.0.weight" in state


def test_joint_checkpoint_exports_and_rebuilds(trained, tmp_path):
    last = os.path.join(trained["save_dir"], "checkpoint_last.pt")
    out = str(tmp_path / "joint_audiomae.pth")
    proc = subprocess.run([sys.executable, "-m", "uamix_fairseq.tools.export", last, out],
                          cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    exported = torch.load(out, weights_only=False)["model"]
    assert "decoder_embed.weight" in exported and "mask_token" in exported
    assert not any(k.startswith(("head.", "support_queue")) for k in exported)

    from fairseq import checkpoint_utils
    ckpt = trained["ckpt"]
    os.rename(ckpt, ckpt + ".gone")  # rebuilt from the checkpoint alone
    try:
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([last])
    finally:
        os.rename(ckpt + ".gone", ckpt)
    model = models[0].eval()
    assert isinstance(model, UamixAudioMAEJointModel)
    x = torch.randn(2, 1, 32, 128)
    with torch.no_grad():
        reference = model.encoder(x)
        for path in (last, out):
            assert torch.allclose(load_audiomae(path).eval()(x), reference, atol=1e-6)
