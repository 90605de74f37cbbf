"""SwARo: Sinkhorn codes, swapped prediction, derangements, the targeted attack, the
`uamix_audiomae_swaro` model and `uamix_swaro` criterion (attack in eval mode, frozen
blocks, mixing targets), two ranks against one process, and a two-rank
fairseq-hydra-train run of configs/demo_swaro.yaml."""

import math
import os
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fairseq_helpers import REPO, make_tiny_setup, tiny_overrides
from test_distributed import WORLD, _run_launcher, run_ranks, split_rows
from uamix_fairseq.modules.attacks import db_to_normalized
from uamix_fairseq.modules.swaro import (
    PrototypeHead, Prototypes, balanced_codes, derangement, sinkhorn,
    swapped_prediction_loss, targeted_attack,
)

FRAMES = 32
NORM_STD = 4.5689974


# ----------------------------------------------------------------------------- sinkhorn
def swav_reference(scores, iterations, epsilon):
    """SwAV's own formulation (exp domain, prototypes x samples), written independently."""
    q = torch.exp(scores.double() / epsilon).t()  # [K, B]
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


def test_sinkhorn_matches_swav_and_reaches_equipartition():
    g = torch.Generator().manual_seed(0)
    scores = F.normalize(torch.randn(6, 8, generator=g), dim=1)  # cosine-like, 6 samples
    codes = sinkhorn(scores, iterations=3, epsilon=0.5)
    torch.testing.assert_close(codes.double(), swav_reference(scores, 3, 0.5), rtol=1e-5,
                               atol=1e-7)
    # Rows (samples) sum to 1 exactly after every iteration; columns (prototypes) reach
    # the equipartition target n / K = 6 / 8 once converged.
    torch.testing.assert_close(codes.sum(1), torch.ones(6))
    converged = sinkhorn(scores, iterations=500, epsilon=0.05)
    torch.testing.assert_close(converged.sum(1), torch.ones(6))
    torch.testing.assert_close(converged.sum(0), torch.full((8,), 6 / 8), atol=1e-4, rtol=0)
    # Few iterations are not converged yet: the columns are still uneven.
    assert (sinkhorn(scores, 1, 0.05).sum(0) - 0.75).abs().max() > 1e-3
    # The log domain survives an epsilon where exp(score / eps) overflows float32.
    hard = sinkhorn(scores * 10, iterations=3, epsilon=1e-3)
    assert torch.isfinite(hard).all()
    torch.testing.assert_close(hard.sum(1), torch.ones(6))
    with pytest.raises(ValueError, match="iterations"):
        sinkhorn(scores, 0, 0.05)


def test_sinkhorn_by_hand_two_by_two():
    # Symmetric 2x2 problem: the fixed point keeps the softmax of each row, because
    # column sums are already equal: row i -> softmax([s_ii, s_ij] / eps).
    scores = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])
    p = 1 / (1 + math.exp(-1.0 / 0.5))
    expected = torch.tensor([[p, 1 - p], [1 - p, p]])
    torch.testing.assert_close(sinkhorn(scores, 3, 0.5), expected)


def test_balanced_codes_skip_invalid_rows_and_use_extra_samples():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(5, 4, generator=g)
    extra = torch.randn(7, 4, generator=g)
    valid = torch.tensor([True, False, True, True, False])
    codes = balanced_codes(scores, 3, 0.1, valid, extra)
    rows = valid.nonzero()[:, 0]
    torch.testing.assert_close(codes[rows], sinkhorn(torch.cat([scores[rows], extra]), 3, 0.1)[:3])
    torch.testing.assert_close(codes[~valid], torch.full((2, 4), 0.25))
    assert not torch.allclose(codes[rows], sinkhorn(scores[rows], 3, 0.1))
    assert torch.equal(balanced_codes(scores, 3, 0.1, torch.zeros(5, dtype=torch.bool)),
                       torch.full((5, 4), 0.25))


# ----------------------------------------------------------------------------- pieces
def test_swapped_prediction_loss_by_hand():
    # softmax([0, ln 3]) = [1/4, 3/4]
    scores = torch.tensor([[0.0, math.log(3.0) * 0.1]])
    codes = torch.tensor([[0.5, 0.5]])
    loss = swapped_prediction_loss(scores, codes, temperature=0.1)
    assert loss.shape == (1,)
    assert float(loss) == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), rel=1e-5)


def test_prototypes_are_normalised_and_can_be_frozen():
    protos = Prototypes(dim=3, num_prototypes=4)
    z = F.normalize(torch.randn(5, 3), dim=1)
    s = protos(z)
    expected = z @ F.normalize(protos.weight, dim=1).t()
    torch.testing.assert_close(s, expected)
    with torch.no_grad():
        protos.weight.mul_(7.0)  # the scale of the weights does not matter
    torch.testing.assert_close(protos(z), s)
    assert s.abs().max() <= 1 + 1e-6
    z = z.requires_grad_(True)
    protos(z, frozen=True).sum().backward()
    assert protos.weight.grad is None and z.grad is not None
    head = PrototypeHead(in_dim=6, proj_hidden_dim=8, proj_layers=2, out_dim=3, num_prototypes=4)
    z, s = head(torch.randn(5, 6))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    assert s.shape == (5, 4)


@pytest.mark.parametrize("n", [2, 3, 5, 16])
def test_derangement_has_no_fixed_points(n):
    for seed in range(50):
        perm = derangement(n, torch.Generator().manual_seed(seed))
        assert sorted(perm.tolist()) == list(range(n))
        assert all(perm[i] != i for i in range(n))
    a = derangement(n, torch.Generator().manual_seed(3))
    assert torch.equal(a, derangement(n, torch.Generator().manual_seed(3)))


def test_derangement_is_uniform_and_needs_two_items():
    # The only derangements of 3 items are the two 3-cycles; both come up about equally.
    g = torch.Generator().manual_seed(0)
    counts = {}
    for _ in range(400):
        key = tuple(derangement(3, g).tolist())
        counts[key] = counts.get(key, 0) + 1
    assert set(counts) == {(1, 2, 0), (2, 0, 1)}
    assert 150 < counts[(1, 2, 0)] < 250
    with pytest.raises(ValueError, match="n >= 2"):
        derangement(1)


# ----------------------------------------------------------------------------- model
def tiny_model(freeze_schedule="[(0, 1)]", queue_size=0, num_prototypes=8):
    from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig
    from uamix_fairseq.models.uamix_audiomae_swaro import (
        UamixAudioMAESwARoConfig, UamixAudioMAESwARoModel,
    )

    torch.manual_seed(0)
    encoder = AudioMAEEncoder(EncoderConfig(embed_dim=32, depth=2, num_heads=1,
                                            num_frames=FRAMES))
    cfg = UamixAudioMAESwARoConfig(num_frames=FRAMES, freeze_schedule=freeze_schedule,
                                   proj_hidden_dim=32, proj_out_dim=16,
                                   num_prototypes=num_prototypes, queue_size=queue_size)
    return UamixAudioMAESwARoModel(cfg, encoder, queue_size=queue_size)


def criterion(**overrides):
    from uamix_fairseq.criterions.uamix_swaro import UamixSwARoConfig, UamixSwARoCriterion

    cfg = dict(seed=1, norm_std=NORM_STD, mix_mode="none")
    cfg.update(overrides)
    return UamixSwARoCriterion(UamixSwARoConfig(**cfg), task=None)


def clip_batch(n=5, seed=11):
    g = torch.Generator().manual_seed(seed)
    view1 = torch.randn(n, 1, FRAMES, 128, generator=g) * 0.5
    view2 = view1 + 0.1 * torch.randn(n, 1, FRAMES, 128, generator=g)
    return view1, view2, torch.arange(n)


def sample(view1, view2, ids, dummy=False):
    out = {"id": ids, "nsentences": len(ids), "net_input": {"view1": view1, "view2": view2}}
    if dummy:
        out["is_dummy"] = True
    return out


def test_model_state_is_float_and_head_is_tagged():
    model = tiny_model(queue_size=8)
    assert all(v.is_floating_point() for v in model.state_dict().values())
    assert not any(k.startswith("head.predictor") for k in model.state_dict())
    assert model.head.prototypes.weight.optim_overrides["unit"] == "head"
    assert tiny_model().support_queue is None
    with pytest.raises(ValueError, match="model.num_prototypes"):
        tiny_model(num_prototypes=1)


def test_attack_moves_towards_target_inside_budget():
    model = tiny_model().eval()
    x, _, _ = clip_batch()
    with torch.no_grad():
        clean_codes = sinkhorn(model.attack_scores(x), 3, 0.05)
    perm = derangement(5, torch.Generator().manual_seed(0))
    targets = clean_codes[perm]
    eps = db_to_normalized(6.0, NORM_STD)

    def targeted(v):
        with torch.no_grad():
            return float(swapped_prediction_loss(model.attack_scores(v), targets, 0.1).sum())

    adv = targeted_attack(model.attack_scores, x, targets, 0.1, eps, steps=5,
                          step_size=eps / 2, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-6
    noise = x + eps * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    # The loss towards the other clips' codes drops well below clean and random-noise
    # inputs at the same budget; no parameter receives a gradient.
    assert targeted(adv) < targeted(x) - 1.0
    assert targeted(adv) < targeted(noise) - 1.0
    assert all(p.grad is None for p in model.parameters())


def test_attack_leaves_buffers_modes_and_parameters_untouched():
    model = tiny_model(queue_size=8)
    model.train()
    model.head.projector[1].eval()  # a module in its own mode must keep it
    model.support_queue.push(F.normalize(torch.randn(8, 16), dim=1), torch.arange(8) + 100)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    params = {k: v.clone() for k, v in model.named_parameters()}
    crit = criterion(adv_budget_db=3.0, adv_steps=3, adv_step_db=1.5)
    x, _, _ = clip_batch()
    targets = torch.softmax(torch.randn(5, 8), dim=1)
    adv = crit.adversarial_view(model, x, targets, torch.Generator().manual_seed(0))
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), f"buffer {k} changed during the attack"
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k]) and v.grad is None, k
    assert model.training and not model.head.projector[1].training
    assert model.encoder.blocks[0].training
    eps = db_to_normalized(3.0, NORM_STD)
    assert (adv - x).abs().max() <= eps + 1e-6
    assert (adv - x).abs().max() > 0.9 * eps


def test_attack_gradient_passes_frozen_blocks_without_training_them():
    """Stage A (whole encoder frozen): the attack still perturbs the input along the
    gradient through all blocks; a training step leaves every frozen weight without
    gradient, while the adversarial term reaches the head."""
    model = tiny_model(freeze_schedule="[(0, 0)]").train()
    crit = criterion(adv_random_start=False, adv_steps=1, adv_budget_db=2.0, adv_step_db=2.0)
    view1, view2, ids = clip_batch()
    # One step of eps * sign(input gradient), no random start: every element whose
    # gradient reached the input moved by exactly eps.
    eps = db_to_normalized(2.0, NORM_STD)
    targets = torch.softmax(torch.randn(5, 8), dim=1)
    adv = crit.adversarial_view(model, view1, targets, None)
    moved = ((adv - view1).abs() - eps).abs() < 1e-6
    assert moved.float().mean() > 0.99
    loss, n, log = crit(model, sample(view1, view2, ids))
    loss.backward()
    assert n == 5 and torch.isfinite(loss)
    for p in model.encoder.parameters():
        assert p.grad is None
    head_grad = model.head.prototypes.weight.grad.clone()
    assert head_grad.abs().sum() > 0
    # Without the adversarial term the head's gradient differs: the term is trained on.
    model.zero_grad()
    crit0 = criterion(adv_weight=0.0)
    loss0, _, log0 = crit0(model, sample(view1, view2, ids))
    loss0.backward()
    assert float(log0["adv_loss"]) == 0.0 and float(log["adv_loss"]) > 0
    assert not torch.allclose(model.head.prototypes.weight.grad, head_grad)


def test_stage_b_trains_top_block_only_and_loss_parts_add_up():
    model = tiny_model(freeze_schedule="[(0, 1)]").train()
    crit = criterion(mix_mode="tcutmix", adv_weight=0.5, mix_weight=2.0)
    view1, view2, ids = clip_batch()
    loss, _, log = crit(model, sample(view1, view2, ids))
    loss.backward()
    assert all(p.grad is None for p in model.encoder.blocks[0].parameters())
    assert model.encoder.blocks[1].attn.qkv.weight.grad.abs().sum() > 0
    expected = log["clean_loss"] + 2.0 * log["mix_loss"] + 0.5 * log["adv_loss"]
    torch.testing.assert_close(log["loss"], expected)


def test_mixture_target_is_lambda_mix_of_source_codes():
    """L_mix recomputed independently: the same model outputs, Sinkhorn codes of view 2,
    and the mixing the criterion draws for this update."""
    model = tiny_model().train()
    for m in model.modules():  # outputs independent of the batch, so a rerun matches
        if isinstance(m, torch.nn.BatchNorm1d):
            m.eval()
    crit = criterion(mix_mode="tcutmix", mix_alpha=0.5, adv_weight=0.0)
    crit.set_num_updates(4)
    view1, view2, ids = clip_batch()
    _, _, log = crit(model, sample(view1, view2, ids))
    mixed, lam, partner = crit.mix(view1, crit._generator())
    assert 0 < float(lam[0]) < 1
    with torch.no_grad():
        out = model(view1, view2, mixed)
    q2 = sinkhorn(out["s2"], 3, 0.05)
    target = lam[:, None] * q2 + (1 - lam[:, None]) * q2[partner]
    expected = -(target * torch.log_softmax(out["sm"] / 0.1, dim=1)).sum()
    torch.testing.assert_close(log["mix_loss"], expected, rtol=1e-5, atol=1e-5)


def test_attack_on_mixture_and_config_errors():
    model = tiny_model().train()
    view1, view2, ids = clip_batch()
    loss, _, log = criterion(mix_mode="tcutmix", adv_on_mixture=True)(
        model, sample(view1, view2, ids))
    assert torch.isfinite(loss) and float(log["adv_loss"]) > 0
    with pytest.raises(ValueError, match="adv_on_mixture"):
        criterion(mix_mode="none", adv_on_mixture=True)
    with pytest.raises(ValueError, match="criterion.sinkhorn_epsilon"):
        criterion(sinkhorn_epsilon=0.0)


def test_yaml_configs_name_real_fields_and_as20k_matches_uamix():
    from uamix_fairseq.criterions.uamix_swaro import UamixSwARoConfig
    from uamix_fairseq.models.uamix_audiomae_swaro import UamixAudioMAESwARoConfig

    fields = {"criterion": set(UamixSwARoConfig.__dataclass_fields__),
              "model": set(UamixAudioMAESwARoConfig.__dataclass_fields__)}
    load = lambda name: OmegaConf.to_container(  # noqa: E731
        OmegaConf.load(os.path.join(REPO, "configs", name + ".yaml")))
    for name, base in (("demo_swaro", "demo"), ("swaro_as20k", "uamix_as20k")):
        cfg, parent = load(name), load(base)
        for group in ("criterion", "model"):
            assert set(cfg[group]) <= fields[group], (name, group)
        defaults = {k: v for d in cfg["defaults"] if isinstance(d, dict) for k, v in d.items()}
        assert defaults["criterion"] == "uamix_swaro"
        assert defaults["model"] == "uamix_audiomae_swaro"
        # Everything else is the parent recipe's (full files: see their header).
        for group in set(parent) - {"criterion", "model", "defaults"}:
            assert cfg[group] == parent[group], (name, group)


# ------------------------------------------------------------------ two ranks, spawn
CLIPS = (3, 2)


def _rank_model():
    model = tiny_model(queue_size=6).train()
    # A full queue, so that its scores join the Sinkhorn problem on every rank.
    g = torch.Generator().manual_seed(7)
    model.support_queue.push(F.normalize(torch.randn(6, 16, generator=g), dim=-1),
                             torch.arange(6) + 100)
    for m in model.modules():  # per-row outputs: ranks and one process comparable
        if isinstance(m, torch.nn.BatchNorm1d):
            m.eval()
    return model


def _rank_step(model, crit, smp, dummy=False):
    import uamix_fairseq.criterions.uamix_swaro as crit_module

    seen = []
    original = crit_module.balanced_codes

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    crit_module.balanced_codes = recording
    try:
        model.zero_grad()
        loss, n, log = crit(model, smp)
        if dummy:
            loss = loss * 0
        loss.backward()
    finally:
        crit_module.balanced_codes = original
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return {"loss": loss.detach(), "n": n, "codes": seen, "grads": grads,
            "queue": {k: v.clone() for k, v in model.support_queue.state_dict().items()},
            "log": {k: float(v) for k, v in log.items()}}


def _swaro_worker(rank):
    view1, view2, ids = clip_batch()
    results = {}
    for dummy_rank in (None, 1):
        mine = [split_rows(t, CLIPS)[rank] for t in (view1, view2, ids)]
        dummy = rank == dummy_rank
        if dummy:
            mine = [t[:2] for t in (view1, view2, ids)]
        crit = criterion(adv_random_start=False)
        results[dummy_rank] = _rank_step(_rank_model(), crit, sample(*mine, dummy=dummy), dummy)
    return results


@pytest.fixture(scope="module")
def swaro_ranks(tmp_path_factory):
    return run_ranks(_swaro_worker, tmp_path_factory.mktemp("swaro_ranks"))


@pytest.mark.parametrize("dummy_rank", [None, 1])
def test_two_ranks_agree_and_match_one_process(swaro_ranks, dummy_rank):
    results = [r[dummy_rank] for r in swaro_ranks]
    real = [r for r in range(WORLD) if r != dummy_rank]
    # Sinkhorn ran on the gathered global batch: the same codes on every rank, bit for bit.
    for a, b in zip(results[0]["codes"], results[1]["codes"]):
        assert torch.equal(a, b)
    for k in results[0]["queue"]:
        assert torch.equal(results[0]["queue"][k], results[1]["queue"][k]), k
    view1, view2, ids = clip_batch()
    keep = torch.cat([split_rows(torch.arange(5), CLIPS)[r] for r in real])
    ref = _rank_step(_rank_model(), criterion(adv_random_start=False),
                     sample(view1[keep], view2[keep], ids[keep]))
    total = sum(results[r]["loss"] for r in real)
    torch.testing.assert_close(total, ref["loss"], rtol=1e-3, atol=1e-3)
    assert all(math.isfinite(results[r]["log"]["adv_loss"]) for r in range(WORLD))
    assert sum(results[r]["log"]["adv_loss"] for r in real) > 0
    for name, g_ref in ref["grads"].items():
        g = sum(results[r]["grads"].get(name, torch.zeros_like(g_ref)) for r in range(WORLD))
        assert torch.isfinite(g).all(), name
        assert (g - g_ref).norm() <= 1e-3 * g_ref.norm() + 1e-6, name
    if dummy_rank is not None:
        assert all(g.abs().sum() == 0 for g in results[dummy_rank]["grads"].values())


# ------------------------------------------------------------------ two ranks, fairseq
_TRAIN_WRAPPER = '''
import os, sys
import torch
from fairseq import checkpoint_utils
from fairseq_cli import hydra_train, train

_save = checkpoint_utils.save_checkpoint

def save_and_dump(cfg, trainer, epoch_itr, val_loss):
    out = _save(cfg, trainer, epoch_itr, val_loss)
    state = {k: v.clone() for k, v in trainer.get_model().state_dict().items()}
    torch.save(state, os.path.join(os.environ["STATE_DUMP_DIR"],
                                   f"rank{trainer.data_parallel_rank}.pt"))
    return out

train.checkpoint_utils.save_checkpoint = save_and_dump
sys.exit(hydra_train.cli_main())
'''


def test_two_rank_fairseq_training(tmp_path):
    corpus, ckpt = make_tiny_setup(str(tmp_path))
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(_TRAIN_WRAPPER)
    dumps, logs = tmp_path / "dumps", tmp_path / "logs"
    dumps.mkdir()
    env = dict(os.environ, UAMIX_TRAIN_CMD=f"{sys.executable} {wrapper}",
               STATE_DUMP_DIR=str(dumps), UAMIX_LOG_DIR=str(logs), OMP_NUM_THREADS="1")
    save_dir = tmp_path / "ckpt"
    overrides = tiny_overrides(corpus, ckpt, str(save_dir), **{
        "hydra.run.dir": str(tmp_path / "hydra"),
        "optimization.max_update": 4,
        "dataset.validate_interval_updates": 4,
        "checkpoint.save_interval_updates": 4,
        "model.num_prototypes": 8,
        "model.queue_size": 16,
        "criterion.queue_start_update": 2,
    })
    args = [str(WORLD), "--config-dir", os.path.join(REPO, "configs"),
            "--config-name", "demo_swaro", *overrides]
    rc, timed_out = _run_launcher(args, env, tmp_path / "launcher.log", 150)
    log0 = (logs / "rank0.log").read_text() if (logs / "rank0.log").exists() else ""
    report = (tmp_path / "launcher.log").read_text()[-4000:] + log0[-4000:]
    assert not timed_out and rc == 0, report

    inner = re.findall(r"\[train_inner\].* loss=([^,]+),.*adv_loss=([^,]+),.*"
                       r"queue_used=([^,]+),.*trainable_blocks=([^,]+),.*num_updates=(\d+)",
                       log0)
    assert [int(u) for *_, u in inner] == [1, 2, 3, 4], report
    assert all(math.isfinite(float(loss)) and float(adv) > 0 for loss, adv, *_ in inner)
    assert float(inner[-1][2]) == 1.0  # the queue (full, past update 2) was used
    assert "valid on 'valid' subset" in log0

    # legacy_ddp: both ranks hold the same parameters and queue (BatchNorm statistics
    # are per rank, as without SyncBN).
    states = [torch.load(dumps / f"rank{r}.pt") for r in range(WORLD)]
    for k, v in states[0].items():
        if "running_" not in k:
            assert torch.equal(v, states[1][k]), k
    # Frozen blocks (0 and 1 of 4, the whole run) stayed bit-identical; the top ones
    # and the prototypes trained; the saved state is float-only (averageable).
    original = torch.load(ckpt, weights_only=False)["model"]
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=False)["model"]
    for k, v in state.items():
        assert v.is_floating_point(), k
        if k.startswith(("encoder.blocks.0.", "encoder.blocks.1.", "encoder.patch_embed.")):
            assert torch.equal(v, original[k[len("encoder."):]]), f"frozen {k} changed"
    assert not torch.equal(state["encoder.blocks.3.attn.qkv.weight"],
                           original["blocks.3.attn.qkv.weight"])
    assert state["head.prototypes.weight"].shape == (8, 16)
