"""model.sync_batchnorm: head BatchNorm statistics over the global batch.

Two gloo CPU ranks with uneven row counts must give what one process gives on the
concatenated batch: the BatchNorm outputs, input gradients, summed weight/bias
gradients and running statistics (GlobalBatchNorm1d alone), and the uamix_audiomae
model's head outputs and gradients with its BatchNorm in training mode.
"""

import os
import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from uamix_fairseq.modules.nnclr import FloatBatchNorm1d, NNCLRHead
from uamix_fairseq.modules.sync_batchnorm import GlobalBatchNorm1d, convert_sync_batchnorm

WORLD = 2
ROWS = (5, 3)  # rank 0 has 5 rows, rank 1 has 3
TIMEOUT = 120
FRAMES = 32
HAVE_FAIRSEQ = True
try:
    import fairseq  # noqa: F401
except ImportError:
    HAVE_FAIRSEQ = False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        result = {"bn": _bn_step(rank)}
        if HAVE_FAIRSEQ:
            result["model"] = _model_step(rank)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _ranks(rows):
    """Row slices per rank of a global batch of sum(ROWS) rows; rank None = all."""
    starts = [sum(ROWS[:r]) for r in range(WORLD)]
    return slice(None) if rows is None else slice(starts[rows], starts[rows] + ROWS[rows])


# ---------------------------------------------------------------- the layer alone
def _bn_data():
    g = torch.Generator().manual_seed(3)
    # A large mean beside a small spread: E[x^2] - E[x]^2 would lose digits here.
    x = 50.0 + 0.1 * torch.randn(sum(ROWS), 6, generator=g, dtype=torch.float64)
    w = torch.randn(sum(ROWS), 6, generator=g, dtype=torch.float64)  # weights every entry
    return x, w


def _bn_layer():
    torch.manual_seed(0)
    bn = FloatBatchNorm1d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    # float64 throughout, so that the comparison is about the algorithm, not rounding.
    return convert_sync_batchnorm(torch.nn.Sequential(bn.double()))[0]


def _bn_step(rank):
    """Two training steps (running statistics move twice); rank None = one process."""
    x_all, w_all = _bn_data()
    sl = _ranks(rank)
    bn = _bn_layer().train()
    assert isinstance(bn, GlobalBatchNorm1d)
    x = x_all[sl].clone().requires_grad_(True)
    y = bn(x)
    (y * w_all[sl]).sum().backward()
    bn(x_all[sl] * 2.0)
    return {"y": y.detach(), "x_grad": x.grad, "weight_grad": bn.weight.grad,
            "bias_grad": bn.bias.grad, "state": bn.state_dict()}


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("syncbn"))
    ctx = mp.start_processes(_entry, args=(_free_port(), out_dir), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"ranks still running after {TIMEOUT} s; killed them")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False)
            for r in range(WORLD)]


def test_two_ranks_equal_one_process_on_the_concatenated_batch(rank_results):
    ref = _bn_step(None)  # not distributed: plain BatchNorm on all rows
    res = [r["bn"] for r in rank_results]
    tol = dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(torch.cat([r["y"] for r in res]), ref["y"], **tol)
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in res]), ref["x_grad"], **tol)
    for key in ("weight_grad", "bias_grad"):  # DDP sums the ranks' shares
        torch.testing.assert_close(res[0][key] + res[1][key], ref[key], **tol)
    for key, value in ref["state"].items():
        torch.testing.assert_close(res[0]["state"][key], value, **tol)
        assert torch.equal(res[0]["state"][key], res[1]["state"][key]), key


def test_local_statistics_would_differ(rank_results):
    """The check above has teeth: per-rank BatchNorm gives other outputs."""
    x_all, _ = _bn_data()
    local = torch.cat([_bn_layer().train()(x_all[_ranks(r)]) for r in range(WORLD)])
    assert not torch.allclose(local.detach(), _bn_step(None)["y"], atol=1e-3)


def test_single_process_and_eval_are_plain_batchnorm():
    x, _ = _bn_data()
    plain, glob = FloatBatchNorm1d(6).double(), GlobalBatchNorm1d(6).double()
    glob.load_state_dict(plain.state_dict())
    torch.testing.assert_close(glob.train()(x), plain.train()(x), rtol=0, atol=0)
    torch.testing.assert_close(glob.eval()(x), plain.eval()(x), rtol=0, atol=0)


def test_convert_keeps_the_state_dict():
    head = NNCLRHead(8, proj_hidden_dim=16, out_dim=4, pred_hidden_dim=16)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    convert_sync_batchnorm(head)
    bns = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == 4 and all(isinstance(m, GlobalBatchNorm1d) for m in bns)
    after = head.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not any("num_batches_tracked" in k for k in after)


# ---------------------------------------------------------------- the fairseq model
def _model(sync: bool):
    from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig
    from uamix_fairseq.models.uamix_audiomae import UamixAudioMAEConfig, UamixAudioMAEModel

    torch.manual_seed(0)
    encoder = AudioMAEEncoder(EncoderConfig(embed_dim=32, depth=2, num_heads=1,
                                            num_frames=FRAMES))
    cfg = UamixAudioMAEConfig(num_frames=FRAMES, freeze_schedule="[(0, 1)]",
                              proj_hidden_dim=32, pred_hidden_dim=32, proj_out_dim=16,
                              sync_batchnorm=sync)
    return UamixAudioMAEModel(cfg, encoder, queue_size=16).train()


def _model_step(rank):
    g = torch.Generator().manual_seed(11)
    views = [torch.randn(sum(ROWS), 1, FRAMES, 128, generator=g) for _ in range(3)]
    weights = {k: torch.randn(sum(ROWS), 16, generator=g) for k in ("z1", "p1", "z2", "p2", "pm")}
    sl = _ranks(rank)
    model = _model(sync=True)
    out = model(*[v[sl] for v in views])
    sum((out[k] * w[sl]).sum() for k, w in weights.items()).backward()
    return {"out": {k: out[k].detach() for k in weights},
            "grads": {n: p.grad.clone() for n, p in model.named_parameters()
                      if p.grad is not None},
            "buffers": {n: b.clone() for n, b in model.head.named_buffers()}}


@pytest.mark.skipif(not HAVE_FAIRSEQ, reason="fairseq not installed")
def test_model_head_two_ranks_equal_one_process(rank_results):
    ref = _model_step(None)
    res = [r["model"] for r in rank_results]
    for key, value in ref["out"].items():
        torch.testing.assert_close(torch.cat([r["out"][key] for r in res]), value,
                                   rtol=1e-4, atol=1e-5)
    assert any("encoder.blocks.1" in n for n in ref["grads"])
    scale = max(float(v.abs().max()) for v in ref["grads"].values())  # ~10 here
    for name, value in ref["grads"].items():
        # Float32 rounding of other batch shapes: 1e-5 of the largest gradient (some
        # gradients, e.g. of biases followed by BatchNorm, are zero up to rounding).
        torch.testing.assert_close(res[0]["grads"][name] + res[1]["grads"][name], value,
                                   rtol=1e-4, atol=1e-5 * scale, msg=name)
    for name, value in ref["buffers"].items():
        torch.testing.assert_close(res[0]["buffers"][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not HAVE_FAIRSEQ, reason="fairseq not installed")
def test_model_field_default_off():
    assert not any(isinstance(m, GlobalBatchNorm1d) for m in _model(sync=False).modules())
    bns = [m for m in _model(sync=True).head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bns and all(isinstance(m, GlobalBatchNorm1d) for m in bns)
