"""UnReMix negative weighting: the weights (``uamix_fairseq.modules.unremix``) against hand-computed
values and a loop-by-loop reference, the weighted NNCLR / soft-target losses against
their formula (equal weights = the plain loss exactly), the ``uamix_nnclr`` criterion
with ``unremix`` on one process and on two gloo ranks, and the config variants through
Hydra and ``fairseq-hydra-train``."""

import math
import os
import re

import pytest
import torch
import torch.nn.functional as F

from uamix_fairseq.modules.nnclr import contrastive_logits, nnclr_loss, soft_target_loss
from uamix_fairseq.modules.unremix import NORMS, UnReMixConfig, negative_weights, normalise_rows

from fairseq_helpers import REPO, make_tiny_setup, run_train, tiny_overrides
from test_distributed import (  # the two-rank harness and its tiny model and batch
    CLIPS, WORLD, _clip_batch, _sample, _step, _tiny_model, run_ranks, split_rows,
)


# ----------------------------------------------------------------------------- weights
def test_normalise_rows_by_hand():
    values = torch.tensor([[3.0, 1.0, 3.0, 2.0, 9.0], [4.0, 4.0, 4.0, 0.0, 0.0]])
    negatives = torch.tensor([[True, True, True, True, False],
                              [True, True, True, False, False]])  # row 1: no spread
    got = {norm: normalise_rows(values, negatives, norm) for norm in NORMS}
    torch.testing.assert_close(got["minmax"][0, :4], torch.tensor([1.0, 0.0, 1.0, 0.5]))
    # Ranks 0..3 among the negatives; the two 3s share rank (2 + 3) / 2.
    torch.testing.assert_close(got["rank"][0, :4], torch.tensor([2.5, 0.0, 2.5, 1.0]) / 3)
    mean, std = 2.25, math.sqrt((0.75 ** 2 * 2 + 1.25 ** 2 + 0.25 ** 2) / 4)
    expected = [1 / (1 + math.exp(-(v - mean) / std)) for v in (3.0, 1.0, 3.0, 2.0)]
    torch.testing.assert_close(got["zscore"][0, :4], torch.tensor(expected))
    for norm in NORMS:
        torch.testing.assert_close(got[norm][1, :3], torch.full((3,), 0.5))


def test_weights_hand_computed_tiny_batch():
    """Four clips; candidates on the four axes, anchors equal to them except clip 3,
    whose anchor points at candidate 0 (so clip 3 is the uncertain one). tau = 1."""
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    a = torch.cat([c[:3], c[:1]])
    cfg = UnReMixConfig(norm="minmax", floor=0.05, mean_one=True)
    w = negative_weights(a, c, torch.eye(4), 1.0, cfg)

    # Row 0 (anchor (1, 0)), negatives 1, 2, 3:
    #   similarity cos = 0, -1, 0                 -> minmax 1, 0, 1
    #   uncertainty: rows 0-2 put logit 1 on their own column, row 3 logit 0
    #     (u0 = u1 = u2 < u3)                     -> minmax 0, 0, 1
    #   mean distance to the other negatives: c1: (1 + 2) / 2, c2: (1 + 1) / 2,
    #     c3: (2 + 1) / 2 = 1.5, 1, 1.5           -> minmax 1, 0, 1
    #   sum 2, 0 -> floor 0.05, 3; mean-one: divide by 5.05 / 3.
    torch.testing.assert_close(w[0], torch.tensor([1.0, 2 * 3 / 5.05, 0.05 * 3 / 5.05,
                                                   3 * 3 / 5.05]))
    # Row 3 (anchor (1, 0), positive column 3), negatives 0, 1, 2:
    #   similarity 1, 0, -1 -> 1, 0.5, 0; uncertainty all equal -> 0.5 each;
    #   distances c0: (1 + 2) / 2, c1: 1, c2: 1.5 -> 1, 0, 1
    #   sum 2.5, 1, 1.5; mean 5 / 3.
    torch.testing.assert_close(w[3], torch.tensor([1.5, 0.6, 0.9, 1.0]))
    assert torch.equal(w.diagonal(), torch.ones(4))  # positives unweighted

    # Without mean-one the mixed values themselves (floor included) come back.
    raw = negative_weights(a, c, torch.eye(4), 1.0, UnReMixConfig(mean_one=False))
    torch.testing.assert_close(raw[0], torch.tensor([1.0, 2.0, 0.05, 3.0]))
    # The uncertainty values themselves, from the closed form ||softmax - one-hot||.
    e = math.e
    z = e + 2 + 1 / e
    u0 = math.sqrt((1 - e / z) ** 2 + (2 + e ** -2) / z ** 2)
    u3 = math.sqrt((e / z) ** 2 + (1 / z) ** 2 + (1 / (e * z)) ** 2 + (1 - 1 / z) ** 2)
    from uamix_fairseq.modules.unremix import uncertainty
    torch.testing.assert_close(uncertainty(a @ c.t(), torch.eye(4)),
                               torch.tensor([u0, u0, u0, u3]))


def _reference_weights(a, c, targets, tau, cfg, rows, mask):
    """The definitions, one entry at a time (no closed forms)."""
    a, c = F.normalize(a, dim=-1), F.normalize(c, dim=-1)
    m = a.shape[0]
    logits = (a @ c.t() / tau).masked_fill(~mask[None, :], float("-inf"))
    unc = [float((torch.softmax(logits[k], 0) - targets[k]).norm()) for k in range(m)]

    def norm(vals):
        vals = torch.tensor(vals, dtype=torch.float64)
        if cfg.norm == "minmax":
            return (vals - vals.min()) / (vals.max() - vals.min())
        if cfg.norm == "zscore":
            return torch.sigmoid((vals - vals.mean()) / vals.std(unbiased=False))
        return torch.tensor([float(sum(1.0 for u in vals if u < v)
                                   + (sum(1.0 for u in vals if u == v) - 1) / 2)
                             for v in vals], dtype=torch.float64) / (len(vals) - 1)

    out = torch.ones(len(rows), m, dtype=torch.float64)
    for r, i in enumerate(rows):
        neg = [k for k in range(m) if targets[i, k] == 0 and mask[k]]
        sim = [float(a[i] @ c[k]) for k in neg]
        rep = [sum(1 - float(c[k] @ c[j]) for j in neg if j != k) / (len(neg) - 1)
               for k in neg]
        mixed = (cfg.similarity * norm(sim) + cfg.uncertainty * norm([unc[k] for k in neg])
                 + cfg.representativeness * norm(rep)).clamp_min(cfg.floor)
        if cfg.mean_one:
            mixed = mixed / mixed.mean()
        out[r, neg] = mixed
    return out.float()


@pytest.mark.parametrize("norm", NORMS)
def test_weights_match_loop_reference(norm):
    g = torch.Generator().manual_seed(3)
    m = 7
    a, c = torch.randn(m, 5, generator=g), torch.randn(m, 5, generator=g)
    # Soft targets (two positives per row, one row paired with itself) and a masked
    # column, as in the mixture loss with a dummy row.
    lam = torch.rand(m, generator=g)
    partner = torch.tensor([6, 5, 4, 3, 2, 1, 0])
    targets = torch.zeros(m, m)
    targets[torch.arange(m), torch.arange(m)] += lam
    targets[torch.arange(m), partner] += 1 - lam
    mask = torch.tensor([True, True, True, True, True, False, True])
    cfg = UnReMixConfig(similarity=0.7, uncertainty=1.3, representativeness=-0.4,
                        norm=norm, floor=0.02, mean_one=norm != "rank")
    rows = slice(2, 6)
    got = negative_weights(a, c, targets, 0.3, cfg, rows, mask)
    ref = _reference_weights(a, c, targets, 0.3, cfg, range(2, 6), mask)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert not got.requires_grad


def test_weights_on_degenerate_rows_are_finite():
    # One clip, or every other column masked: no negatives, all weights 1, no NaN.
    a = torch.randn(3, 4)
    w = negative_weights(a, a, torch.eye(3), 0.1, UnReMixConfig(),
                         column_mask=torch.tensor([True, False, False]))
    assert torch.equal(w[0], torch.ones(3))
    assert torch.isfinite(w).all()
    for norm in NORMS:
        w = negative_weights(a[:1], a[:1], torch.eye(1), 0.1, UnReMixConfig(norm=norm))
        assert torch.equal(w, torch.ones(1, 1))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="criterion.unremix_floor"):
        UnReMixConfig(floor=0.0, field_prefix="criterion.unremix_")
    with pytest.raises(ValueError, match="norm"):
        UnReMixConfig(norm="softmax")
    with pytest.raises(ValueError, match=r"\[m, m\]"):
        negative_weights(torch.randn(3, 2), torch.randn(3, 2), torch.eye(2), 1.0,
                         UnReMixConfig())


# ----------------------------------------------------------------------------- losses
def test_weighted_losses_hand_computed():
    g = torch.Generator().manual_seed(4)
    nn, p = torch.randn(2, 3, generator=g), torch.randn(3, 3, generator=g)
    w = torch.tensor([[9.0, 0.5, 2.0], [0.25, 9.0, 3.0]])  # 9 on the positives: ignored
    tau = 0.5
    loss, logits = nnclr_loss(nn, p, torch.tensor([0, 1]), tau, negative_weights=w)
    l = contrastive_logits(nn, p, tau)
    torch.testing.assert_close(logits, l)  # the returned logits are the plain ones
    expected = sum(-l[i, i] + torch.log(l[i, i].exp() + sum(w[i, k] * l[i, k].exp()
                                                              for k in range(3) if k != i))
                   for i in range(2))
    torch.testing.assert_close(loss, expected)

    # Soft targets: row 0 = 0.6 on column 0 + 0.4 on column 2 (both positives,
    # unweighted), row 1 = 1.0 on column 1 (its partner is itself).
    lam = torch.tensor([0.6, 1.0])
    loss, _ = soft_target_loss(nn, p, lam, torch.tensor([0, 1]), torch.tensor([2, 1]), tau,
                               negative_weights=w)
    denominator0 = l[0, 0].exp() + l[0, 2].exp() + w[0, 1] * l[0, 1].exp()
    denominator1 = l[1, 1].exp() + w[1, 0] * l[1, 0].exp() + w[1, 2] * l[1, 2].exp()
    expected = (-(0.6 * l[0, 0] + 0.4 * l[0, 2] - denominator0.log())
                - (l[1, 1] - denominator1.log()))
    torch.testing.assert_close(loss, expected)


def test_equal_weights_are_the_plain_loss_exactly():
    g = torch.Generator().manual_seed(5)
    nn = torch.randn(3, 4, generator=g, requires_grad=True)
    p = torch.randn(5, 4, generator=g, requires_grad=True)
    mask = torch.tensor([True, True, True, True, False])
    ones = torch.ones(3, 5)
    targets = torch.tensor([0, 1, 2])
    for fn, args in ((nnclr_loss, (nn, p, targets, 0.2, mask)),
                     (soft_target_loss, (nn, p, torch.tensor([0.3, 0.5, 0.9]), targets,
                                         torch.tensor([2, 3, 0]), 0.2, mask))):
        plain, _ = fn(*args)
        grads_plain = torch.autograd.grad(plain, [nn, p])
        weighted, _ = fn(*args, negative_weights=ones)
        grads_weighted = torch.autograd.grad(weighted, [nn, p])
        assert torch.equal(plain, weighted), fn.__name__
        for a, b in zip(grads_plain, grads_weighted):
            assert torch.equal(a, b), fn.__name__
    with pytest.raises(ValueError, match="negative_weights"):
        nnclr_loss(nn, p, targets, 0.2, negative_weights=torch.ones(3, 4))


# ----------------------------------------------------------------------------- criterion
def _unremix_criterion(mix_mode="tcutmix", **fields):
    from uamix_fairseq.criterions.uamix_nnclr import UamixNNCLRConfig, UamixNNCLRCriterion

    return UamixNNCLRCriterion(UamixNNCLRConfig(mix_mode=mix_mode, seed=1, **fields),
                               task=None)


def test_criterion_uniform_weights_give_the_plain_loss():
    view1, view2, ids = _clip_batch()
    sample = _sample(view1, view2, ids)
    plain = _step(_tiny_model(), _unremix_criterion(), sample)
    # All coefficients 0: every weight is floor / floor = 1 (up to rounding of the mean).
    uniform = _step(_tiny_model(), _unremix_criterion(
        unremix=True, unremix_coef_similarity=0.0, unremix_coef_uncertainty=0.0,
        unremix_coef_representativeness=0.0), sample)
    weighted = _step(_tiny_model(), _unremix_criterion(unremix=True), sample)
    torch.testing.assert_close(uniform["loss"], plain["loss"], rtol=1e-6, atol=1e-6)
    for name, g in plain["grads"].items():
        torch.testing.assert_close(uniform["grads"][name], g, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(weighted["loss"], plain["loss"], rtol=1e-3)
    assert all(torch.isfinite(g).all() for g in weighted["grads"].values())
    with pytest.raises(ValueError, match="criterion.unremix_floor"):
        _unremix_criterion(unremix=True, unremix_floor=0.0)


# ------------------------------------------------------------------ two ranks
TWO_RANK_CASES = [(None, "minmax"), (1, "rank")]  # (dummy rank, norm)


def _recording_step(model, criterion, sample, dummy=False):
    """_step, also returning the mixing drawn and every UnReMix weight matrix made."""
    import uamix_fairseq.criterions.base as base_module
    import uamix_fairseq.criterions.uamix_nnclr as crit_module

    recorded = {"weights": [], "all_rows": []}
    original_mix, original_weights = base_module.mix_batch, crit_module.negative_weights

    def recording_mix(*args, **kwargs):
        recorded["mix"] = original_mix(*args, **kwargs)
        return recorded["mix"]

    def recording_weights(anchors, candidates, targets, tau, cfg, rows, mask):
        recorded["weights"].append(original_weights(anchors, candidates, targets, tau, cfg,
                                                    rows, mask))
        # The weights of every row of the global batch, as this rank would compute them.
        recorded["all_rows"].append(original_weights(anchors, candidates, targets, tau, cfg,
                                                     None, mask))
        return recorded["weights"][-1]

    base_module.mix_batch, crit_module.negative_weights = recording_mix, recording_weights
    try:
        out = _step(model, criterion, sample, dummy=dummy)
    finally:
        base_module.mix_batch, crit_module.negative_weights = original_mix, original_weights
    return {**out, **recorded}


def _two_rank_worker(rank):
    results = {}
    view1, view2, ids = _clip_batch()
    for dummy_rank, norm in TWO_RANK_CASES:
        mine = [split_rows(t, CLIPS)[rank] for t in (view1, view2, ids)]
        dummy = rank == dummy_rank
        if dummy:  # an earlier real batch of another size, as fairseq's dummy batch
            mine = [t[:2] for t in (view1, view2, ids)]
        results[dummy_rank, norm] = _recording_step(
            _tiny_model(), _unremix_criterion(unremix=True, unremix_norm=norm),
            _sample(*mine), dummy=dummy)
    return results


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    return run_ranks(_two_rank_worker, tmp_path_factory.mktemp("unremix_ranks"))


@pytest.mark.parametrize("dummy_rank,norm", TWO_RANK_CASES)
def test_two_ranks_match_one_process(two_rank_results, dummy_rank, norm):
    """Two gloo ranks with UnReMix give the loss, gradients and weights of one process
    on the whole batch: the weights come from gathered tensors only."""
    results = [r[dummy_rank, norm] for r in two_rank_results]
    real = [r for r in range(WORLD) if r != dummy_rank]
    view1, view2, ids = _clip_batch()
    keep = torch.cat([split_rows(torch.arange(len(ids)), CLIPS)[r] for r in real])

    # Replay on one process the mixing each rank drew (partners shifted to global rows).
    mixes, offset = [], 0
    for r in real:
        mixed, lam, partner = results[r]["mix"]
        mixes.append((mixed, lam, partner + offset))
        offset += CLIPS[r]
    replay = tuple(torch.cat(parts) for parts in zip(*mixes))
    import uamix_fairseq.criterions.base as base_module
    original = base_module.mix_batch
    base_module.mix_batch = lambda *a, **k: replay
    try:
        ref = _recording_step(_tiny_model(), _unremix_criterion(unremix=True, unremix_norm=norm),
                              _sample(view1[keep], view2[keep], ids[keep]))
    finally:
        base_module.mix_batch = original

    # Weights of the three logit matrices (12, 21, mix): the real ranks' rows, on the
    # real columns, are the one-process weights.
    real_columns = keep if dummy_rank is None else torch.arange(len(keep))
    assert len(ref["weights"]) == 3
    for j, w_ref in enumerate(ref["weights"]):
        w = torch.cat([results[r]["weights"][j] for r in real])[:, real_columns]
        # Not bit-identical: the predictions come from batches of other sizes.
        torch.testing.assert_close(w, w_ref, rtol=1e-4, atol=1e-4)
        # Every rank computes bit-identical weights for the same rows and columns.
        assert torch.equal(results[0]["all_rows"][j], results[1]["all_rows"][j])
    # Not all trivial (with 3 real clips, a mixture row has at most 2 negatives).
    assert any(not torch.allclose(w, torch.ones_like(w)) for w in ref["weights"])
    if dummy_rank is not None:
        assert all(torch.isfinite(w).all() for w in results[dummy_rank]["weights"])

    total = sum(results[r]["loss"] for r in real)
    torch.testing.assert_close(total, ref["loss"], rtol=1e-5, atol=1e-4)
    for name, g_ref in ref["grads"].items():
        g = sum(results[r]["grads"][name] for r in range(WORLD))
        assert torch.isfinite(g).all(), name
        # The weights agree to ~1e-4 (above), so the gradients to ~1e-4 of their scale.
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4 * float(g_ref.abs().max()))
    if dummy_rank is not None:
        assert all(g.abs().sum() == 0 for g in results[dummy_rank]["grads"].values())


# ------------------------------------------------------------------ configs and fairseq
def _compose(name):
    from fairseq.dataclass.initialize import hydra_init
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    hydra_init(name)  # what fairseq-hydra-train does with --config-name
    with initialize_config_dir(config_dir=os.path.join(REPO, "configs"), version_base="1.1"):
        return OmegaConf.to_container(compose(name))


@pytest.mark.parametrize("variant,parent", [("demo_unremix", "demo"),
                                            ("uamix_as20k_unremix", "uamix_as20k")])
def test_config_variants_are_their_parent_plus_unremix(variant, parent):
    child, base = _compose(variant), _compose(parent)
    assert child["criterion"].pop("unremix") is True
    assert base["criterion"].pop("unremix") is False  # the dataclass default
    assert child == base


def test_demo_unremix_trains_through_fairseq(tmp_path):
    corpus, ckpt = make_tiny_setup(str(tmp_path))
    save_dir = str(tmp_path / "ckpt")
    code, log = run_train(tiny_overrides(corpus, ckpt, save_dir, **{
        "hydra.run.dir": str(tmp_path / "hydra"), "optimization.max_update": 4,
        # Another normalisation than the default; from update 3 on, encoder blocks
        # train too (tiny_overrides' freezing schedule).
        "criterion.unremix_norm": "zscore",
    }), cwd=str(tmp_path), config_name="demo_unremix")
    assert code == 0, log[-4000:]
    inner = re.findall(r"\[train_inner\].* loss=([^,]+),.*unremix_max_weight=([^,]+),.*"
                       r"num_updates=(\d+)", log)
    assert [int(n) for _, _, n in inner] == [1, 2, 3, 4], log[-3000:]
    for loss, max_weight, _ in inner:
        assert math.isfinite(float(loss))
        assert float(max_weight) > 1.0  # mean-one weights that are not all equal
    assert os.path.exists(os.path.join(save_dir, "checkpoint_last.pt"))


def test_two_rank_fairseq_training_with_unremix(tmp_path):
    """Two gloo ranks through scripts/train_cpu_multiproc.sh with configs/demo_unremix:
    the weights come from the gathered global batch on both ranks."""
    import sys

    from test_distributed import WORLD, _run_launcher

    corpus, ckpt = make_tiny_setup(str(tmp_path))
    logs = tmp_path / "logs"
    env = dict(os.environ, UAMIX_TRAIN_CMD=f"{sys.executable} -m fairseq_cli.hydra_train",
               UAMIX_LOG_DIR=str(logs), OMP_NUM_THREADS="1")
    overrides = tiny_overrides(corpus, ckpt, str(tmp_path / "ckpt"), **{
        "hydra.run.dir": str(tmp_path / "hydra"), "optimization.max_update": 3,
        "dataset.validate_interval_updates": 3, "checkpoint.save_interval_updates": 3})
    args = [str(WORLD), "--config-dir", os.path.join(REPO, "configs"),
            "--config-name", "demo_unremix", *overrides]
    rc, timed_out = _run_launcher(args, env, tmp_path / "launcher.log", 150)
    log0 = (logs / "rank0.log").read_text() if (logs / "rank0.log").exists() else ""
    report = (tmp_path / "launcher.log").read_text()[-3000:] + log0[-3000:]
    assert not timed_out and rc == 0, report
    inner = re.findall(r"\[train_inner\].* loss=([^,]+),.*unremix_max_weight=([^,]+),"
                       r".*num_updates=(\d+)", log0)
    assert [int(u) for *_, u in inner] == [1, 2, 3], report
    # Mean-one weights with a floor: the largest weight of a row is above 1.
    assert all(math.isfinite(float(loss)) and float(w) > 1.0 for loss, w, _ in inner)
