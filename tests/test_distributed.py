"""Distributed code paths on CPU: two gloo ranks on this machine.

- ``gather_rows`` (uneven row counts, offsets, gradients through the gather) against a
  single-process computation on the concatenated batch;
- the ``uamix_nnclr`` criterion's forward/backward on a tiny model: two ranks together
  give the loss, gradients and support queue of one process on the whole batch, also
  with mixing and with a dummy batch on one rank;
- an end-to-end two-rank ``fairseq-hydra-train`` run through
  ``scripts/train_cpu_multiproc.sh``, resumed on both ranks by a second run.

Every multi-process part runs under a deadline; on expiry all ranks are killed and the
test fails with their output, so a collective that hangs cannot hang the suite.
"""

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from fairseq_helpers import make_tiny_setup, tiny_overrides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "scripts", "train_cpu_multiproc.sh")
WORLD = 2
SPAWN_TIMEOUT = 120  # seconds; a healthy run takes well under 20


# ----------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_group(rank: int, port: int):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))


def _entry(rank, fn, port, out_dir, args):
    """Runs in each spawned rank: set up the group, run ``fn``, save what it returns."""
    _init_group(rank, port)
    try:
        result = fn(rank, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_ranks(fn, out_dir, *args, timeout=SPAWN_TIMEOUT):
    """Run ``fn(rank, *args)`` on WORLD gloo ranks; return the list of their results.

    A rank that raises fails the test with its traceback (torch terminates the others);
    past ``timeout`` every rank is killed and the test fails.
    """
    ctx = mp.start_processes(_entry, args=(fn, free_port(), str(out_dir), args),
                             nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"{fn.__name__}: ranks still running after {timeout} s "
                            "(a collective hangs?); killed them")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False)
            for r in range(WORLD)]


def split_rows(x, sizes):
    return list(torch.split(x, list(sizes)))


# ------------------------------------------------------------------ gather_rows
SIZES = (3, 2)  # rank 0 has 3 rows, rank 1 has 2: the gather must pad and unpad
TAU = 0.5


def _gather_data():
    g = torch.Generator().manual_seed(123)
    a = torch.randn(sum(SIZES), 4, generator=g)
    b = torch.randn(sum(SIZES), 4, generator=g)
    return a, b


def _pair_loss(a_local, b_local, a_all, b_all, first_row):
    """Contrastive-style loss of the local rows against all gathered rows (two gathers,
    like the criterion's two directions), with a nonlinearity before the gather so
    that gradients must flow back through it to the owning rank."""
    targets = torch.arange(a_local.shape[0]) + first_row
    return (F.cross_entropy(a_local @ b_all.t() / TAU, targets, reduction="sum")
            + F.cross_entropy(b_local @ a_all.t() / TAU, targets, reduction="sum"))


def _gather_worker(rank):
    from uamix_fairseq.modules.distributed import gather_rows, rank_and_world

    a_full, b_full = _gather_data()
    a = split_rows(a_full, SIZES)[rank].clone().requires_grad_(True)
    b = split_rows(b_full, SIZES)[rank].clone().requires_grad_(True)
    ids = torch.arange(SIZES[rank]) + 10 * rank
    real = torch.full((SIZES[rank],), rank == 0)

    ids_all, ids_offset = gather_rows(ids, with_grad=False)
    real_all, _ = gather_rows(real, with_grad=False)
    nograd_all, _ = gather_rows(a, with_grad=False)

    a_all, offset = gather_rows(torch.tanh(a), with_grad=True)
    b_all, _ = gather_rows(torch.tanh(b), with_grad=True)
    loss = _pair_loss(a, b, a_all, b_all, offset)
    loss.backward()
    return {
        "rank_and_world": rank_and_world(), "offset": offset, "ids_offset": ids_offset,
        "ids_all": ids_all, "real_all": real_all, "nograd_all": nograd_all.detach(),
        "nograd_requires_grad": nograd_all.requires_grad, "a_all": a_all.detach(),
        "loss": loss.detach(), "grad_a": a.grad, "grad_b": b.grad,
    }


def test_gather_rows_two_ranks_uneven_sizes_and_gradients(rank_results):
    results = [r["gather"] for r in rank_results]

    a_full, b_full = _gather_data()
    a_ref = a_full.clone().requires_grad_(True)
    b_ref = b_full.clone().requires_grad_(True)
    loss_ref = _pair_loss(a_ref, b_ref, torch.tanh(a_ref), torch.tanh(b_ref), 0)
    loss_ref.backward()

    for rank, res in enumerate(results):
        assert res["rank_and_world"] == (rank, WORLD)
        assert res["offset"] == res["ids_offset"] == sum(SIZES[:rank])
        # Concatenation in rank order, padding removed, dtypes kept (long, bool).
        assert torch.equal(res["ids_all"], torch.tensor([0, 1, 2, 10, 11]))
        assert torch.equal(res["real_all"], torch.tensor([True, True, True, False, False]))
        assert torch.equal(res["nograd_all"], a_full)
        assert not res["nograd_requires_grad"]
        assert torch.allclose(res["a_all"], torch.tanh(a_full))
    # Each rank's loss covers its own rows; together they are the full-batch loss...
    total = sum(res["loss"] for res in results)
    assert torch.allclose(total, loss_ref.detach(), rtol=1e-5, atol=1e-5)
    # ...and each row's gradient (from every rank's loss) arrives at its owner.
    grad_a = torch.cat([res["grad_a"] for res in results])
    grad_b = torch.cat([res["grad_b"] for res in results])
    assert torch.allclose(grad_a, a_ref.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(grad_b, b_ref.grad, rtol=1e-5, atol=1e-6)
    # The cross-rank part is not negligible: without it the gradients would differ.
    local_only = torch.autograd.grad(
        _pair_loss(a_ref, b_ref, torch.tanh(a_ref).detach(), torch.tanh(b_ref).detach(), 0),
        [a_ref])[0]
    assert not torch.allclose(local_only, a_ref.grad, atol=1e-3)


def test_gather_rows_single_process_is_identity():
    from uamix_fairseq.modules.distributed import gather_rows, rank_and_world

    x = torch.randn(3, 2, requires_grad=True)
    out, offset = gather_rows(x)
    assert out is x and offset == 0
    assert rank_and_world() == (0, 1)


# ------------------------------------------------------------------ criterion
CLIPS = (3, 2)  # clips per rank
FRAMES = 32


def _tiny_model():
    from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig
    from uamix_fairseq.models.uamix_audiomae import UamixAudioMAEConfig, UamixAudioMAEModel

    torch.manual_seed(0)
    encoder = AudioMAEEncoder(EncoderConfig(embed_dim=32, depth=2, num_heads=1,
                                            num_frames=FRAMES))
    cfg = UamixAudioMAEConfig(num_frames=FRAMES, freeze_schedule="[(0, 1)]",
                              proj_hidden_dim=32, pred_hidden_dim=32, proj_out_dim=16)
    model = UamixAudioMAEModel(cfg, encoder, queue_size=16)
    # A non-empty queue, so that nearest neighbours matter; one entry carries the id of
    # clip 1, which must never be its own neighbour.
    g = torch.Generator().manual_seed(7)
    model.support_queue.push(F.normalize(torch.randn(6, 16, generator=g), dim=-1),
                             torch.tensor([100, 101, 102, 103, 104, 1]))
    model.train()
    # Train mode (the queue is updated) but BatchNorm on running statistics: with
    # per-batch statistics each rank normalises its own rows (no SyncBN), and the
    # two-rank and one-process losses would differ by design, not by a bug.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.eval()
    return model


def _criterion(mix_mode):
    from uamix_fairseq.criterions.uamix_nnclr import UamixNNCLRConfig, UamixNNCLRCriterion

    return UamixNNCLRCriterion(UamixNNCLRConfig(mix_mode=mix_mode, seed=1), task=None)


def _clip_batch():
    g = torch.Generator().manual_seed(11)
    n = sum(CLIPS)
    view1 = torch.randn(n, 1, FRAMES, 128, generator=g)
    view2 = torch.randn(n, 1, FRAMES, 128, generator=g)
    return view1, view2, torch.arange(n)


def _sample(view1, view2, ids):
    return {"id": ids, "nsentences": len(ids),
            "net_input": {"view1": view1, "view2": view2}}


def _step(model, criterion, sample, dummy=False):
    """One forward/backward as the task's train_step runs it."""
    model.zero_grad()
    if dummy:
        sample = dict(sample, is_dummy=True)
    loss, sample_size, log = criterion(model, sample)
    if dummy:
        loss = loss * 0
    loss.backward()
    grads = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
             for n, p in model.named_parameters() if p.requires_grad}
    return {"loss": loss.detach().clone(), "sample_size": sample_size,
            "correct": int(log["correct"]), "grads": grads,
            "queue": {k: v.clone() for k, v in model.support_queue.state_dict().items()}}


def _criterion_worker(rank, mix_mode, dummy_rank):
    import uamix_fairseq.criterions.base as crit_module  # where mix_batch is looked up

    drawn = {}
    original_mix = crit_module.mix_batch

    def recording_mix(*args, **kwargs):
        drawn["mix"] = original_mix(*args, **kwargs)
        return drawn["mix"]

    crit_module.mix_batch = recording_mix
    try:
        model, criterion = _tiny_model(), _criterion(mix_mode)
        view1, view2, ids = _clip_batch()
        mine = [split_rows(t, CLIPS)[rank] for t in (view1, view2, ids)]
        dummy = rank == dummy_rank
        if dummy:
            # fairseq's dummy batch is an earlier real batch: rows (and ids) that also
            # exist on another rank, of another size than that rank's batch.
            mine = [t[:2] for t in (view1, view2, ids)]
        out = _step(model, criterion, _sample(*mine), dummy=dummy)
    finally:
        crit_module.mix_batch = original_mix
    out["mix"] = drawn.get("mix")
    return out


CRITERION_CASES = [("none", None), ("tcutmix", None), ("tcutmix", 1)]


def _all_workers(rank):
    """Everything that needs two ranks, in one spawn (starting ranks costs seconds)."""
    results = {"gather": _gather_worker(rank)}
    for case in CRITERION_CASES:
        results[case] = _criterion_worker(rank, *case)
    return results


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    return run_ranks(_all_workers, tmp_path_factory.mktemp("ranks"))


@pytest.mark.parametrize("mix_mode,dummy_rank", CRITERION_CASES)
def test_criterion_two_ranks_match_one_process(rank_results, monkeypatch, mix_mode,
                                               dummy_rank):
    results = [r[(mix_mode, dummy_rank)] for r in rank_results]
    real = [r for r in range(WORLD) if r != dummy_rank]

    # Reference: one process, the real ranks' clips concatenated; the mixing each rank
    # drew (its rows mixed with partners of the same rank) is replayed on the whole
    # batch with the partner indices shifted to global rows.
    view1, view2, ids = _clip_batch()
    keep = torch.cat([split_rows(torch.arange(len(ids)), CLIPS)[r] for r in real])
    if mix_mode != "none":
        mixes, offset = [], 0
        for r in real:
            mixed, lam, partner = results[r]["mix"]
            mixes.append((mixed, lam, partner + offset))
            offset += CLIPS[r]
        replay = tuple(torch.cat(parts) for parts in zip(*mixes))
        import uamix_fairseq.criterions.base as crit_module
        monkeypatch.setattr(crit_module, "mix_batch", lambda *a, **k: replay)
    ref = _step(_tiny_model(), _criterion(mix_mode), _sample(view1[keep], view2[keep], ids[keep]))

    # The global loss (what the trainer's gradient normalisation sees) is the sum of the
    # ranks' losses, and DDP sums the ranks' gradients.
    total = sum(results[r]["loss"] for r in real)
    assert torch.allclose(total, ref["loss"], rtol=1e-5, atol=1e-4), (total, ref["loss"])
    assert sum(results[r]["correct"] for r in real) == ref["correct"]
    assert sum(results[r]["sample_size"] for r in real) == ref["sample_size"]
    for name, g_ref in ref["grads"].items():
        g = sum(results[r]["grads"][name] for r in range(WORLD))
        assert torch.isfinite(g).all(), name
        assert torch.allclose(g, g_ref, rtol=1e-4, atol=1e-6), name
    assert any(g.abs().sum() > 0 for n, g in ref["grads"].items() if "encoder.blocks.1" in n)
    if dummy_rank is not None:
        assert all(g.abs().sum() == 0 for g in results[dummy_rank]["grads"].values())
    # Every rank pushed the same global rows (real ones only) in the same order: the
    # ranks' queues are bit-identical, and equal to the one-process queue up to float
    # rounding (the projections were computed in batches of other sizes).
    for key, value in ref["queue"].items():
        assert torch.equal(results[0]["queue"][key], results[1]["queue"][key]), key
        assert torch.allclose(results[0]["queue"][key], value, atol=1e-6), key
    assert ref["queue"]["state"][1] == 6 + len(keep)


# ------------------------------------------------------------------ end to end
E2E_TIMEOUT = 150  # seconds for each two-rank run (one takes about 15 on 2 cores)
TRAIN_CLIPS = 11  # odd; batch size 4 -> batches of 4, 4, 3: rank 1 runs a dummy batch
BATCH = 4
EPOCHS = 2
UPDATES_PER_EPOCH = 2  # 3 batches over 2 ranks

# Run by the launcher instead of `fairseq-hydra-train` (UAMIX_TRAIN_CMD): the same
# entry point, plus a dump of every rank's model state (support queue included)
# whenever a checkpoint is due, so the test can compare the ranks (fairseq itself saves
# on rank 0 only).
_TRAIN_WRAPPER = '''
import os, sys
import torch
from fairseq import checkpoint_utils
from fairseq_cli import hydra_train, train

_save = checkpoint_utils.save_checkpoint

def save_and_dump(cfg, trainer, epoch_itr, val_loss):
    out = _save(cfg, trainer, epoch_itr, val_loss)
    rank = trainer.data_parallel_rank
    state = trainer.get_model().state_dict()
    torch.save({k: v.detach().clone() for k, v in state.items()},
               os.path.join(os.environ["STATE_DUMP_DIR"],
                            f"state-rank{rank}-epoch{epoch_itr.epoch}.pt"))
    return out

train.checkpoint_utils.save_checkpoint = save_and_dump
sys.exit(hydra_train.cli_main())
'''


def _write_corpus(root):
    corpus, ckpt = make_tiny_setup(str(root))
    # Keep an odd number of training clips (the manifest: the root folder, then one
    # "relative path<TAB>samples" line per clip).
    train = os.path.join(corpus, "train.tsv")
    with open(train) as f:
        lines = f.read().splitlines()
    assert len(lines) > TRAIN_CLIPS
    with open(train, "w") as f:
        f.write("\n".join(lines[: 1 + TRAIN_CLIPS]) + "\n")
    # The labels beside the manifest must keep lining up with it, one per clip.
    label = os.path.join(corpus, "train.label")
    if os.path.exists(label):
        with open(label) as f:
            labels = f.read().splitlines()
        with open(label, "w") as f:
            f.write("\n".join(labels[:TRAIN_CLIPS]) + "\n")
    return corpus, ckpt


def _run_launcher(args, env, log_path, timeout):
    """Run the launcher in its own process group; kill the group on timeout."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["bash", LAUNCHER, *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return proc.returncode, True


def _train_two_ranks(tmp_path, corpus, ckpt, max_update, name):
    """One launcher run of WORLD ranks into tmp_path/ckpt; returns rank 0's log and
    the report (launcher and rank logs) for failure messages. Fails the test if the
    run does not exit 0 within E2E_TIMEOUT."""
    wrapper = tmp_path / "train_wrapper.py"
    wrapper.write_text(_TRAIN_WRAPPER)
    dumps = tmp_path / "states"
    dumps.mkdir(exist_ok=True)
    logs = tmp_path / f"logs-{name}"
    env = dict(os.environ, UAMIX_TRAIN_CMD=f"{sys.executable} {wrapper}",
               STATE_DUMP_DIR=str(dumps), UAMIX_LOG_DIR=str(logs))
    overrides = tiny_overrides(corpus, ckpt, str(tmp_path / "ckpt"), **{
        "hydra.run.dir": str(tmp_path / "hydra"),
        "dataset.batch_size": BATCH,
        # No batch shuffling: the 3-clip batch and the dummy batch land on known updates.
        "dataset.curriculum": 1000,
        "optimization.max_update": max_update,
        "optimization.max_epoch": EPOCHS,
        # Validate and save at every epoch end, not by updates (whatever demo.yaml says).
        "checkpoint.save_interval": 1,
        "checkpoint.save_interval_updates": 0,
        "dataset.validate_interval": 1,
        "dataset.validate_interval_updates": 0,
        "model.queue_size": 64,  # capped at the 11 training clips
    })
    args = [str(WORLD), "--config-dir", os.path.join(REPO, "configs"),
            "--config-name", "demo", *overrides]
    launcher_log = tmp_path / f"launcher-{name}.log"
    t0 = time.monotonic()
    rc, timed_out = _run_launcher(args, env, launcher_log, E2E_TIMEOUT)
    elapsed = time.monotonic() - t0
    texts = {f"launcher ({name})": launcher_log.read_text()}
    for r in range(WORLD):
        path = logs / f"rank{r}.log"
        texts[f"rank {r} ({name})"] = path.read_text() if path.exists() else "(no log)"
    report = "\n".join(f"===== {k} =====\n{v[-6000:]}" for k, v in texts.items())
    assert not timed_out, f"{name}: no exit after {E2E_TIMEOUT} s; killed all ranks\n{report}"
    assert rc == 0, f"{name}: launcher exited {rc} after {elapsed:.0f} s\n{report}"
    return texts[f"rank 0 ({name})"], report


_INNER = re.compile(r"\[train_inner\]\[INFO\] - epoch (\d+):.* loss=([^,]+),.*"
                    r"queue_fill=([^,]+),.* bsz=(\d+), num_updates=(\d+)")


@pytest.mark.skipif(shutil.which("fairseq-hydra-train") is None,
                    reason="fairseq-hydra-train not installed")
def test_two_rank_cpu_training_end_to_end_and_resume(tmp_path):
    """Epoch 1 in one launcher run, then the same command with a higher max_update:
    both ranks resume from rank 0's checkpoint_last.pt (fairseq loads it on rank 0 and
    broadcasts it) and train epoch 2."""
    corpus, ckpt = _write_corpus(tmp_path)
    dumps = tmp_path / "states"

    log0, report = _train_two_ranks(tmp_path, corpus, ckpt, UPDATES_PER_EPOCH, "first")
    assert "initialized host" in log0 and "as rank 0" in log0, report
    inner = _INNER.findall(log0)
    # Per update: 4 + 4 clips, then 3 + the dummy batch (bsz counts real clips only).
    assert [(int(e), int(b), int(n)) for e, _, _, b, n in inner] == [
        (1, 8, 1), (1, 3, 2)], report
    assert float(inner[0][2]) == pytest.approx(8 / TRAIN_CLIPS, abs=1e-3), report
    first = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", map_location="cpu",
                       weights_only=False)
    assert first["optimizer_history"][-1]["num_updates"] == UPDATES_PER_EPOCH

    max_update = EPOCHS * UPDATES_PER_EPOCH
    log0, report = _train_two_ranks(tmp_path, corpus, ckpt, max_update, "resumed")
    assert re.search(r"Loaded checkpoint \S*checkpoint_last\.pt \(epoch 2 @ %d updates\)"
                     % UPDATES_PER_EPOCH, log0), report
    resumed = _INNER.findall(log0)
    # The update count goes on from the checkpoint; the restored queue is already full.
    assert [(int(e), int(b), int(n)) for e, _, _, b, n in resumed] == [
        (2, 8, 3), (2, 3, 4)], report
    assert float(resumed[0][2]) == pytest.approx(1.0, abs=1e-3), report
    inner += resumed
    assert all(math.isfinite(float(loss)) for _, loss, _, _, _ in inner), report
    assert re.search(r"epoch 0*%d \| valid on 'valid' subset" % EPOCHS, log0), report
    assert re.search(r"epoch 0*%d \| loss .* num_updates %d \|" % (EPOCHS, max_update), log0), report

    # Rank 0's checkpoint: the queue (capped at the 11 training clips) was filled by
    # 11 real rows per epoch, never by the dummy batch's 4 rows: after two epochs it
    # holds each training clip exactly once and the pointer went round 22 -> 0.
    ck = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", map_location="cpu",
                    weights_only=False)
    assert ck["optimizer_history"][-1]["num_updates"] == max_update
    model = ck["model"]
    assert model["support_queue.features"].shape[0] == TRAIN_CLIPS
    assert model["support_queue.state"].tolist() == [0.0, float(TRAIN_CLIPS)]
    assert sorted(model["support_queue.indices"].tolist()) == list(range(TRAIN_CLIPS))
    norms = model["support_queue.features"].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)

    # Every rank holds the same parameters and queue at the end of each epoch: in the
    # resumed run rank 1 started from rank 0's checkpoint, not from its own start.
    # (Batch-norm statistics are per rank without model.sync_batchnorm.)
    per_rank = ("running_mean", "running_var", "num_batches_tracked")
    for epoch in range(1, EPOCHS + 1):
        s = [torch.load(dumps / f"state-rank{r}-epoch{epoch}.pt") for r in range(WORLD)]
        assert s[0].keys() == s[1].keys()
        shared = [k for k in s[0] if not k.endswith(per_rank)]
        assert any(k.startswith("encoder.") for k in shared), shared
        for key in shared:
            assert torch.equal(s[0][key], s[1][key]), (epoch, key)
    for key, value in model.items():
        assert torch.equal(s[0][key], value), key
    assert not torch.equal(first["model"]["support_queue.features"],
                           model["support_queue.features"])


# ------------------------------------------------------------------ the launcher alone
# A stand-in for fairseq-hydra-train: records its rank's pid and arguments, then exits
# with FAKE_EXIT_<rank> (default 0) or sleeps for a minute if that is "hang". With
# "lockstep" it trains for a minute like a real rank: rank 1 prints a step every 0.1 s,
# and rank 0 prints a step only when rank 1 has made one (as if they met in a
# collective), so a stopped rank 1 silences both.
_FAKE_RANK = '''
import os, sys, time
rank = int(next(a for a in sys.argv if "distributed_rank=" in a).split("=")[1])
out = os.environ["FAKE_OUT"]
with open(os.path.join(out, f"rank{rank}.args"), "w") as f:
    f.write("\\n".join(sys.argv[1:]))
with open(os.path.join(out, f"rank{rank}.pid"), "w") as f:
    f.write(str(os.getpid()))
what = os.environ.get(f"FAKE_EXIT_{rank}", "0")
if what == "hang":
    time.sleep(60)
if what == "lockstep":
    step_file, seen = os.path.join(out, "step"), None
    for _ in range(600):
        if rank == 1:
            with open(step_file + ".tmp", "w") as f:
                f.write(str(time.monotonic()))
            os.replace(step_file + ".tmp", step_file)
            print("rank 1 step", flush=True)
        elif os.path.exists(step_file) and open(step_file).read() != seen:
            seen = open(step_file).read()
            print("rank 0 step", flush=True)
        time.sleep(0.1)
time.sleep(0.3)
sys.exit(int(what))
'''


def _fake_env(tmp_path, exits=None):
    script = tmp_path / "fake_rank.py"
    script.write_text(_FAKE_RANK)
    env = dict(os.environ, UAMIX_TRAIN_CMD=f"{sys.executable} {script}",
               FAKE_OUT=str(tmp_path))
    env.update({f"FAKE_EXIT_{r}": str(v) for r, v in (exits or {}).items()})
    return env


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_launcher_passes_rank_overrides(tmp_path):
    env = _fake_env(tmp_path)
    out = subprocess.run(["bash", LAUNCHER, "3", "--config-name", "demo", "a.b=1",
                          "distributed_training.distributed_backend=mpi"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ports = set()
    for rank in range(3):
        args = (tmp_path / f"rank{rank}.args").read_text().splitlines()
        # Options stay in front (Hydra's parser), the user's keys win over defaults.
        assert args[:3] == ["--config-name", "demo", "a.b=1"]
        assert "distributed_training.distributed_backend=mpi" in args
        assert "distributed_training.distributed_backend=gloo" not in args
        for expected in ("common.cpu=true", "distributed_training.ddp_backend=legacy_ddp",
                         "distributed_training.distributed_no_spawn=true",
                         f"distributed_training.distributed_rank={rank}",
                         "distributed_training.distributed_world_size=3"):
            assert expected in args
        init = [a for a in args if a.startswith("distributed_training.distributed_init_method=")]
        assert len(init) == 1 and init[0].split("=", 1)[1].startswith("tcp://127.0.0.1:")
        ports.add(init[0])
    assert len(ports) == 1  # one rendezvous for all ranks

    refused = subprocess.run(["bash", LAUNCHER, "2", "distributed_training.distributed_rank=1"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "set by this script" in refused.stderr
    c10d = subprocess.run(["bash", LAUNCHER, "2", "distributed_training.ddp_backend=c10d"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert c10d.returncode == 2 and "legacy_ddp" in c10d.stderr
    bad = subprocess.run(["bash", LAUNCHER, "two"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "NPROC" in bad.stderr


def test_launcher_stops_all_ranks_when_one_fails(tmp_path):
    env = _fake_env(tmp_path, {0: "hang", 1: 3})
    t0 = time.monotonic()
    out = subprocess.run(["bash", LAUNCHER, "2"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 3, out.stderr
    assert time.monotonic() - t0 < 30  # rank 0 was stopped, not waited for
    assert "rank 1 exited with status 3" in out.stderr
    assert _gone(int((tmp_path / "rank0.pid").read_text()))


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_launcher_forwards_signals(tmp_path, sig, status):
    env = _fake_env(tmp_path, {0: "hang", 1: "hang"})
    # As from a terminal: a process started in the background by a non-interactive shell
    # (`nohup pytest &`) inherits SIGINT ignored, and bash cannot trap a signal ignored
    # at its start.
    proc = subprocess.Popen(["bash", LAUNCHER, "2"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"rank{r}.pid").exists() for r in range(2)):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == status
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "stopping all ranks" in proc.stderr.read()
    for r in range(2):
        assert _gone(int((tmp_path / f"rank{r}.pid").read_text()))


def _wait_for_pids(tmp_path, proc, world=2, timeout=30):
    deadline = time.monotonic() + timeout
    while not all((tmp_path / f"rank{r}.pid").exists() for r in range(world)):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return [int((tmp_path / f"rank{r}.pid").read_text()) for r in range(world)]


def _group_gone(pgid, timeout=5):
    """True once no process of the launcher's process group is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


WATCHDOG = 3  # seconds


def test_launcher_watchdog_stops_a_run_with_a_stopped_rank(tmp_path):
    env = _fake_env(tmp_path, {0: "lockstep", 1: "lockstep"})
    proc = subprocess.Popen(["bash", LAUNCHER, "--watchdog", str(WATCHDOG), "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    pids = []
    try:
        pids = _wait_for_pids(tmp_path, proc)
        time.sleep(WATCHDOG + 1)  # healthy steps for longer than the watchdog
        assert proc.poll() is None, proc.communicate()
        os.kill(pids[1], signal.SIGSTOP)
        stopped_at = time.monotonic()
        out, err = proc.communicate(timeout=WATCHDOG + 20)
        elapsed = time.monotonic() - stopped_at
    finally:
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 124, err
    # The watchdog checks every 0.2 s with 1 s clock resolution; SIGTERM then ends both.
    assert WATCHDOG - 1 <= elapsed <= WATCHDOG + 5, (elapsed, err)
    assert re.search(r"no rank printed a line for \d+ s \(--watchdog %d\)" % WATCHDOG, err)
    assert f"stopped (SIGSTOP or a debugger): rank 1 (pid {pids[1]})" in err
    assert "stopping all ranks" in err
    assert "rank 0 step" in out and "[rank 1] rank 1 step" in out  # output still shown
    assert all(_gone(pid) for pid in pids)
    assert _group_gone(proc.pid)  # no rank and no output filter left behind


def test_launcher_watchdog_stops_silent_ranks_none_stopped(tmp_path):
    env = _fake_env(tmp_path, {0: "hang", 1: "hang"})  # silent, as if deadlocked
    t0 = time.monotonic()
    out = subprocess.run(["bash", LAUNCHER, "--watchdog=2", "2"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 124 and time.monotonic() - t0 < 20, out.stderr
    assert "no rank is stopped" in out.stderr and "raise it" in out.stderr
    assert all(_gone(int((tmp_path / f"rank{r}.pid").read_text())) for r in range(2))


def test_launcher_watchdog_option_and_logs(tmp_path):
    logs = tmp_path / "logs"
    env = dict(_fake_env(tmp_path), UAMIX_LOG_DIR=str(logs), UAMIX_WATCHDOG="30")
    ok = subprocess.run(["bash", LAUNCHER, "2", "a.b=1"], env=env, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and "watchdog 30 s" in ok.stderr, ok.stderr
    assert (tmp_path / "rank1.args").read_text().splitlines()[0] == "a.b=1"
    assert [p.name for p in sorted(logs.iterdir())] == ["rank0.log", "rank1.log"]
    bad = subprocess.run(["bash", LAUNCHER, "--watchdog", "soon", "2"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "whole number of seconds" in bad.stderr
