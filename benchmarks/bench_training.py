"""Training-step cost of uaMix tuning of a ViT-B AudioMAE on CPU.

    python benchmarks/bench_training.py [--batch-size 8] [--num-frames 128] [--steps 5]
                                        [--warmup 1] [--threads 1] [--quick] [--unremix]
                                        [--out benchmarks/results.json]

What it measures, on one synthetic batch of waveforms already in memory (so data loading
is excluded everywhere), with a ViT-B-shaped encoder (768 wide, 12 blocks, 12 heads) and
the default NNCLR head (768-2048-2048-256, predictor 256-4096-256), T-CutMix on, a
support queue filled with random unit vectors:

1. Partial vs full tuning. One uaMix step (fbank -> two views -> T-CutMix -> encoder over
   view 1, view 2 and the mixture -> head -> NNCLR + soft-target loss -> backward ->
   AdamW) with the top 6 of 12 blocks trainable (the encoder's
   ``forward(x, trainable_blocks=6)``: lower blocks without autograd) against all 12
   trainable. Same head, loss, batch and weights. Memory is measured in a fresh
   subprocess per configuration (see ``memory_worker``).
2. fairseq vs bare PyTorch. The same step (6 trainable blocks) three ways:
   a bare loop over the plain modules with ``torch.optim.AdamW``; fairseq's pieces built
   the way fairseq builds them (``setup_task`` on an OmegaConf config made from the
   dataclasses, ``task.build_model``, ``task.build_criterion``,
   ``fairseq.optim.build_optimizer`` -> ``uamix_adamw``) driven by ``task.train_step`` +
   ``task.optimizer_step``; and fairseq's ``Trainer.train_step``. All three start from the
   same weights and seeds, so their losses must agree step by step (checked).
3. With ``--unremix``: the UnReMix overhead. The fairseq task step with
   ``criterion.unremix=true`` (default fields) beside the plain one, from the same
   weights, in the same interleaved rounds; plus the weight computation alone (the three
   weight matrices of a step) at this batch and at the AudioSet-20K global batch of 1024.

Timing: every timed pipeline runs one step in turn, round after round (the order rotates
each round), so a change of machine load during the run hits all of them alike; the
first ``--warmup`` rounds are not timed; the median over ``--steps`` rounds is reported,
with the min-max range. One torch thread by default (``--threads``, 0 = torch's
default): on a 2-core machine shared with other work, two OpenMP threads stall whenever
another process takes one core, and step times then swing several-fold.
"""

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "demo"))
from demo_pipeline import cpu_model  # noqa: E402
from uamix_fairseq.modules.audiomae import (  # noqa: E402
    AudioMAEEncoder,
    EncoderConfig,
    load_audiomae,
    write_random_audiomae,
)
from uamix_fairseq.audio.frontend import FrontendConfig, batch_fbank, model_input  # noqa: E402
from uamix_fairseq.modules.mixing import mix_batch  # noqa: E402
from uamix_fairseq.modules.nnclr import NNCLRHead, SupportQueue, nnclr_loss, soft_target_loss  # noqa: E402
from uamix_fairseq.modules.views import ViewConfig, two_views  # noqa: E402

# The method's defaults (docs/method.md, "Reconstructed choices at a glance") that both
# the bare loop and fairseq use.
SEED = 1
LR = 1e-4
BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.05
HEAD_WEIGHT_DECAY = 1e-5
LAYER_DECAY = 0.65
TEMPERATURE = 0.15
PARTIAL_BLOCKS = 6
MB = 1024 * 1024
# Wall-clock time, and this process's CPU time (all its threads): with one thread the
# latter only counts the time the step actually ran, so other processes sharing the
# cores inflate it far less than wall-clock time.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}

PIPELINE_NAMES = {
    "bare_top6": "bare PyTorch loop, top 6 of 12 blocks trainable",
    "bare_all12": "bare PyTorch loop, all 12 blocks trainable",
    "fairseq_task": "fairseq task.train_step + task.optimizer_step (top 6)",
    "fairseq_trainer": "fairseq Trainer.train_step (top 6)",
    "fairseq_task_unremix": "fairseq task step with UnReMix negative weights (top 6)",
}
UNREMIX_TARGET = 1.05  # at most 5% extra step time (issue 5)


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def synthetic_batch(batch_size: int, frontend: FrontendConfig):
    """Noise-like waveforms, each exactly long enough for ``num_frames`` frames, mean
    removed (as the dataset does), plus lengths and dataset ids."""
    g = torch.Generator().manual_seed(1234)
    n = frontend.max_samples
    wave = (0.1 * torch.randn(batch_size, n, generator=g)).clamp(-0.9, 0.9)
    wave = wave - wave.mean(dim=1, keepdim=True)
    lengths = torch.full((batch_size,), n, dtype=torch.long)
    ids = torch.arange(batch_size, dtype=torch.long)
    return wave, lengths, ids


def fill_queue(queue: SupportQueue):
    """Fill the queue with random unit vectors whose dataset ids are not in the batch, so
    nearest-neighbour search runs over the whole queue, as it does once training has
    gone on for a while."""
    g = torch.Generator().manual_seed(99)
    feats = F.normalize(torch.randn(queue.size, queue.features.shape[1], generator=g), dim=1)
    queue.push(feats, torch.arange(queue.size, dtype=torch.float64) + 1e6)


# --------------------------------------------------------------------------------------
# The bare loop
# --------------------------------------------------------------------------------------


def bare_param_groups(encoder: AudioMAEEncoder, head: NNCLRHead, trainable_blocks: int):
    """AdamW groups of the trainable parameters only: top blocks at lr * decay^(depth-i),
    final norm and head at lr; no weight decay on biases and norms."""

    def split(params, lr, wd):
        params = list(params)
        return [
            {"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": wd},
            {"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0},
        ]

    depth = encoder.depth
    groups = []
    for i in range(depth - trainable_blocks, depth):
        groups += split(encoder.blocks[i].parameters(), LR * LAYER_DECAY ** (depth - i),
                        WEIGHT_DECAY)
    if trainable_blocks > 0:
        groups += split(encoder.norm.parameters(), LR, 0.0)
    groups += split(head.parameters(), LR, HEAD_WEIGHT_DECAY)
    return [g for g in groups if g["params"]]


class BareLoop:
    """One uaMix step written directly with the plain modules and torch.optim.AdamW.

    Uses the same per-step random streams as the fairseq task (views) and criterion
    (mixing, neighbours), so that it computes exactly what fairseq computes.
    """

    def __init__(self, encoder, head, queue, trainable_blocks, frontend, views):
        self.encoder, self.head, self.queue = encoder.train(), head.train(), queue
        self.trainable_blocks = trainable_blocks
        self.frontend, self.views = frontend, views
        self.optimizer = torch.optim.AdamW(
            bare_param_groups(encoder, head, trainable_blocks), lr=LR, betas=BETAS, eps=EPS,
            fused=True,  # as uamix_adamw builds it (adam_fused=true)
        )

    def trainable_parameters(self) -> int:
        return sum(p.numel() for g in self.optimizer.param_groups for p in g["params"])

    def forward_loss(self, wave, lengths, ids, update_num):
        # Seeds as in UamixContrastiveTask._generator / UamixNNCLRCriterion._generator
        # (rank 0), so the views, the cut and the neighbours match fairseq's.
        view_gen = torch.Generator().manual_seed((SEED * 7919 + update_num) * 131)
        gen = torch.Generator().manual_seed(((SEED * 1_000_003 + update_num) * 101) % 2**63)
        b = wave.shape[0]
        fbank, valid = batch_fbank(wave, lengths, self.frontend)
        x1, x2 = two_views(fbank, valid, self.views, view_gen)
        v1, v2 = model_input(x1, self.frontend), model_input(x2, self.frontend)
        mixed, lam, partner = mix_batch(v1, "tcutmix", 1.0, "reverse", 1, gen)

        tokens = self.encoder(torch.cat([v1, v2, mixed]), trainable_blocks=self.trainable_blocks)
        y1, y2, ym = self.encoder.pool(tokens).split(b)
        z1, p1 = self.head(y1)
        z2, p2 = self.head(y2)
        _, pm = self.head(ym)

        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
        nn1 = self.queue.nearest(z1, ids, 1, gen)
        nn2 = self.queue.nearest(z2, ids, 1, gen)
        own = torch.arange(b)
        loss12, _ = nnclr_loss(nn1, p2, own, TEMPERATURE)
        loss21, _ = nnclr_loss(nn2, p1, own, TEMPERATURE)
        mix, _ = soft_target_loss(pm, nn2, lam, own, partner, TEMPERATURE)
        loss = 0.5 * (loss12 + loss21) + mix  # summed over the batch, as the criterion
        self.queue.push(z1.detach(), ids)
        return loss

    def step(self, wave, lengths, ids, update_num) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward_loss(wave, lengths, ids, update_num)
        (loss / wave.shape[0]).backward()  # fairseq divides the gradient by sample_size
        self.optimizer.step()
        return float(loss.detach())


def build_bare(encoder, head_state, queue_size, trainable_blocks, frontend, views):
    head = NNCLRHead(encoder.embed_dim)
    if head_state is not None:
        head.load_state_dict(head_state)
    queue = SupportQueue(queue_size, 256)
    fill_queue(queue)
    return BareLoop(encoder, head, queue, trainable_blocks, frontend, views)


# --------------------------------------------------------------------------------------
# fairseq
# --------------------------------------------------------------------------------------


def fairseq_config(checkpoint, data_dir, save_dir, num_frames, batch_size, queue_size,
                   unremix: bool = False):
    """A full FairseqConfig made from the dataclasses, resolved and frozen the way
    fairseq's hydra entry point does it (to_container(resolve=True) -> struct)."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.optim.lr_scheduler.fixed_schedule import FixedLRScheduleConfig
    from omegaconf import OmegaConf, open_dict

    from uamix_fairseq.criterions.uamix_nnclr import UamixNNCLRConfig
    from uamix_fairseq.models.uamix_audiomae import UamixAudioMAEConfig
    from uamix_fairseq.optim.uamix_adamw import UamixAdamWConfig
    from uamix_fairseq.tasks.uamix_contrastive import UamixContrastiveConfig

    cfg = OmegaConf.structured(FairseqConfig)
    cfg = OmegaConf.merge(cfg, {
        "common": {"cpu": True, "seed": SEED, "log_format": "none"},
        "dataset": {"batch_size": batch_size, "num_workers": 0},
        "distributed_training": {"distributed_world_size": 1, "ddp_backend": "legacy_ddp"},
        "optimization": {"lr": [LR], "clip_norm": 0.0, "max_update": 10**6},
        "checkpoint": {"save_dir": save_dir, "no_save": True},
    })
    with open_dict(cfg):
        cfg.task = OmegaConf.merge(OmegaConf.structured(UamixContrastiveConfig), {
            "_name": "uamix_contrastive", "data": data_dir, "num_frames": num_frames,
        })
        cfg.model = OmegaConf.merge(OmegaConf.structured(UamixAudioMAEConfig), {
            "_name": "uamix_audiomae", "audiomae_checkpoint": checkpoint,
            "freeze_schedule": f"[(0, {PARTIAL_BLOCKS})]", "queue_size": queue_size,
            "layer_decay": LAYER_DECAY, "head_weight_decay": HEAD_WEIGHT_DECAY,
        })
        cfg.criterion = OmegaConf.merge(OmegaConf.structured(UamixNNCLRConfig), {
            "_name": "uamix_nnclr", "temperature": TEMPERATURE, "mix_mode": "tcutmix",
            "unremix": unremix,
        })
        cfg.optimizer = OmegaConf.merge(OmegaConf.structured(UamixAdamWConfig), {
            "_name": "uamix_adamw", "adam_betas": str(BETAS), "adam_eps": EPS,
            "weight_decay": WEIGHT_DECAY,
        })
        cfg.lr_scheduler = OmegaConf.merge(OmegaConf.structured(FixedLRScheduleConfig),
                                           {"_name": "fixed"})
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    OmegaConf.set_struct(cfg, True)
    return cfg


class LossRecorder:
    """Forward hook on a criterion: keeps the loss of each call (costs nothing)."""

    def __init__(self, criterion):
        self.losses = []
        criterion.register_forward_hook(self._record)

    def _record(self, _module, _inputs, output):
        self.losses.append(float(output[0].detach()))


class FairseqTaskLoop:
    """The step as fairseq's Trainer does it for one batch, minus the Trainer: zero the
    grads, task.train_step (views, forward, loss, backward), divide the grads by the
    sample size, task.optimizer_step, advance the update number."""

    def __init__(self, task, model, criterion, optimizer):
        self.task, self.model, self.criterion, self.optimizer = task, model, criterion, optimizer
        self.recorder = LossRecorder(criterion)

    def step(self, sample, update_num) -> float:
        self.optimizer.zero_grad()
        _, sample_size, _ = self.task.train_step(sample, self.model, self.criterion,
                                                 self.optimizer, update_num)
        self.optimizer.multiply_grads(1.0 / sample_size)
        self.task.optimizer_step(self.optimizer, self.model, update_num)
        self.model.set_num_updates(update_num + 1)
        return self.recorder.losses[-1]


class FairseqTrainerLoop:
    """fairseq's Trainer.train_step, inside a metrics aggregation as fairseq_cli does."""

    def __init__(self, cfg, task, model, criterion):
        from fairseq.trainer import Trainer

        self.trainer = Trainer(cfg, task, model, criterion)
        self.recorder = LossRecorder(criterion)

    def step(self, sample, update_num) -> float:
        from fairseq.logging import metrics

        if self.trainer.get_num_updates() != update_num:
            raise RuntimeError("Trainer update number out of step with the other loops")
        with metrics.aggregate("train_inner"):
            self.trainer.train_step([sample])
        return self.recorder.losses[-1]


def build_fairseq(cfg, with_trainer: bool, unremix_cfg=None):
    """The fairseq loops, each with its own task and model; identical weights and queues.

    (One task per model: once a task has built a model it holds the encoder shape, and a
    second ``build_model`` on it rebuilds the encoder from that shape with fresh weights,
    as for a fairseq checkpoint, instead of reading the AudioMAE file.)
    """
    from fairseq import optim, tasks

    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    fill_queue(model.support_queue)
    loops = {"fairseq_task": FairseqTaskLoop(task, model, criterion, optimizer)}
    if with_trainer:
        task2 = tasks.setup_task(cfg.task)
        model2 = task2.build_model(cfg.model)
        model2.head.load_state_dict(model.head.state_dict())
        fill_queue(model2.support_queue)
        loops["fairseq_trainer"] = FairseqTrainerLoop(cfg, task2, model2,
                                                      task2.build_criterion(cfg.criterion))
    if unremix_cfg is not None:
        # The same step with UnReMix on: its own task, model (same file, same head and
        # queue) and optimizer, so that it does exactly the work of "fairseq_task" plus
        # the weights.
        task3 = tasks.setup_task(unremix_cfg.task)
        model3 = task3.build_model(unremix_cfg.model)
        model3.head.load_state_dict(model.head.state_dict())
        fill_queue(model3.support_queue)
        optimizer3 = optim.build_optimizer(
            unremix_cfg.optimizer, [p for p in model3.parameters() if p.requires_grad])
        criterion3 = task3.build_criterion(unremix_cfg.criterion)
        if criterion3.unremix is None:
            raise RuntimeError("criterion.unremix did not reach the UnReMix criterion")
        loops["fairseq_task_unremix"] = FairseqTaskLoop(task3, model3, criterion3, optimizer3)
    return model, loops


def time_unremix_weights(batch_sizes, out_dim: int = 256, rounds: int = 5):
    """The UnReMix weight computation of one step alone (12, 21 and mixture matrices,
    default fields), on random unit embeddings of a global batch of each size:
    median seconds on both clocks."""
    from uamix_fairseq.modules.nnclr import soft_target_matrix
    from uamix_fairseq.modules.unremix import UnReMixConfig, negative_weights

    cfg = UnReMixConfig()
    out = {}
    for m in batch_sizes:
        g = torch.Generator().manual_seed(m)
        emb = [F.normalize(torch.randn(m, out_dim, generator=g), dim=1) for _ in range(5)]
        one_hot, mask = torch.eye(m), torch.ones(m, dtype=torch.bool)
        soft = soft_target_matrix(torch.full((m,), 0.6), torch.arange(m),
                                  torch.arange(m - 1, -1, -1), m)
        times = {clock: [] for clock in CLOCKS}
        for _ in range(rounds):
            t0 = {clock: fn() for clock, fn in CLOCKS.items()}
            negative_weights(emb[0], emb[1], one_hot, TEMPERATURE, cfg, None, mask)
            negative_weights(emb[2], emb[3], one_hot, TEMPERATURE, cfg, None, mask)
            negative_weights(emb[4], emb[2], soft, TEMPERATURE, cfg, None, mask)
            for clock, fn in CLOCKS.items():
                times[clock].append(fn() - t0[clock])
        out[str(m)] = {clock: statistics.median(t) for clock, t in times.items()}
    return out


# --------------------------------------------------------------------------------------
# Memory: one fresh process per configuration
# --------------------------------------------------------------------------------------


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0: write 5 to clear_refs).

    Needed because a child's ru_maxrss starts from the parent's RSS at fork time, and
    because building the model has transients of its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class SavedActivations:
    """Bytes of the tensors autograd saves for backward during a forward pass, each
    storage counted once, parameters excluded: the activation memory that trainable
    blocks hold until backward, independent of the allocator."""

    def __init__(self, modules):
        self.exclude = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
        self.storages = {}

    def pack(self, t):
        s = t.untyped_storage()
        if s.data_ptr() not in self.exclude:
            self.storages[s.data_ptr()] = s.nbytes()
        return t

    @staticmethod
    def unpack(t):
        return t

    @property
    def nbytes(self) -> int:
        return sum(self.storages.values())


def memory_worker(args):
    """Build the step for ``args.trainable_blocks`` from scratch (random ViT-B weights,
    no file read, so no loading transient), record the resident set size, run two steps
    (the first allocates AdamW's state), and print the peak RSS (ru_maxrss) reached."""
    torch.manual_seed(0)
    frontend = FrontendConfig(num_frames=args.num_frames)
    encoder = AudioMAEEncoder(EncoderConfig(num_frames=args.num_frames))
    for p in (encoder.cls_token, *encoder.patch_embed.parameters()):
        p.requires_grad_(False)
    loop = build_bare(encoder, None, args.queue_size, args.trainable_blocks, frontend,
                      ViewConfig())
    wave, lengths, ids = synthetic_batch(args.batch_size, frontend)
    reset = reset_peak_rss()
    baseline, peak_before = current_rss(), peak_rss()
    loop.step(wave, lengths, ids, 0)
    # Second step: count what autograd keeps between forward and backward.
    saved = SavedActivations([loop.encoder, loop.head])
    loop.optimizer.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
        loss = loop.forward_loss(wave, lengths, ids, 1)
    (loss / wave.shape[0]).backward()
    loop.optimizer.step()
    trainable = loop.trainable_parameters()
    print(json.dumps({
        "trainable_blocks": args.trainable_blocks,
        "trainable_parameters": trainable,
        "peak_reset": reset,
        # If the high-water mark could not be reset and was already above what the steps
        # reached, the steps' peak is hidden: report it as unknown.
        "peak_valid": reset or peak_rss() > peak_before,
        "baseline_rss_bytes": baseline,
        "peak_rss_before_steps_bytes": peak_before,
        "peak_rss_bytes": peak_rss(),
        "peak_rss_growth_bytes": peak_rss() - baseline,
        "saved_activation_bytes": saved.nbytes,
        # fp32 gradient + AdamW exp_avg + exp_avg_sq per trainable parameter.
        "grad_and_adamw_state_bytes": 3 * 4 * trainable,
    }))


def run_memory_worker(args, trainable_blocks):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-worker",
           "--trainable-blocks", str(trainable_blocks), "--batch-size", str(args.batch_size),
           "--num-frames", str(args.num_frames), "--queue-size", str(args.queue_size),
           "--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def machine_info():
    import fairseq

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch": torch.__version__,
        "fairseq": fairseq.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }


def mb(n) -> str:
    return f"{n / MB:,.0f}"


def verdict(ratio, target) -> str:
    return f"{'meets' if ratio <= target else 'MISSES'} target <= {target:.2f}"


def spread(times) -> str:
    return f"{min(times):.2f}-{max(times):.2f}"


def print_report(res):
    m, c = res["machine"], res["config"]
    print("\n## Machine")
    print(f"- platform: {m['platform']}, Python {m['python']}")
    print(f"- CPU: {m['cpu_model']}, {m['logical_cpus']} logical CPUs "
          f"({m['cpus_available']} available), {m['memory_gb']} GB RAM")
    print(f"- torch {m['torch']}, fairseq {m['fairseq']}; {m['torch_threads']} torch "
          f"thread(s) used for all measurements (torch's default here: "
          f"{m['torch_default_threads']})")
    print(f"- load average at start {tuple(round(x, 2) for x in m['load_average_at_start'])}"
          f", at end {tuple(round(x, 2) for x in m['load_average_at_end'])} "
          "(other processes on this machine slow every pipeline; ratios are taken from "
          "interleaved rounds so that they are affected alike)")
    if max(m["load_average_at_start"][0], m["load_average_at_end"][0]) > m["cpus_available"]:
        print("- WARNING: the machine was busy with other work during this run (load "
              "above the number of CPUs): wall-clock times are inflated and noisy; "
              + ("with one thread the CPU-time columns are barely affected (a step only "
                 "accrues CPU time while it runs): trust those ratios over wall-clock ones"
                 if m["torch_threads"] == 1 else
                 "with several threads CPU time is inflated too (threads spin while "
                 "waiting for each other); rerun with --threads 1 or on an idle machine"))
    print("\n## Setup")
    print(f"- encoder ViT-B: embed_dim 768, depth 12, heads 12, patch 16; input "
          f"{c['num_frames']} frames x 128 mel bins = {c['tokens']} tokens per clip; "
          f"{c['encoder_parameters'] / 1e6:.1f} M encoder parameters")
    print(f"- batch {c['batch_size']} clips -> view 1 + view 2 + T-CutMix mixture = "
          f"{3 * c['batch_size']} encoder sequences per step; NNCLR head 768-2048-2048-256 / "
          f"256-4096-256; support queue {c['queue_size']} (full)")
    print(f"- AdamW lr {LR}, betas {BETAS}, wd {WEIGHT_DECAY} (head {HEAD_WEIGHT_DECAY}), "
          f"layer decay {LAYER_DECAY}; synthetic waveforms in memory (no data loading)")
    print(f"- timing: {c['warmup']} warm-up round(s), then median of {c['steps']} rounds; "
          "each round runs one step of every pipeline, in rotating order")

    p1 = res["partial_vs_full"]
    print("\n## Results\n")
    print("Step times are medians over the timed rounds, wall-clock and this process's "
          "CPU time (min-max of the wall-clock times in brackets).\n")
    print("| configuration | trainable params | step, wall (s) | step, CPU (s) | peak RSS (MB) "
          "| RSS growth in training (MB) | saved activations (MB) | grads + AdamW state (MB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    mem_keys = ("peak_rss_bytes", "peak_rss_growth_bytes", "saved_activation_bytes",
                "grad_and_adamw_state_bytes")
    for key, label in (("top6", "top 6 of 12 blocks trainable"),
                       ("all12", "all 12 blocks trainable")):
        r = p1[key]
        mem = r.get("memory")
        if mem is None:
            cells = ["-"] * 4
        else:
            cells = [mb(mem[k]) for k in mem_keys]
            if not mem["peak_valid"]:
                cells[:2] = ["hidden (no RSS reset)"] * 2
        print(f"| {label} | {r['trainable_parameters'] / 1e6:.1f} M | "
              f"{r['median_s']['wall']:.2f} ({spread(r['step_times_s']['wall'])}) | "
              f"{r['median_s']['cpu']:.2f} | " + " | ".join(cells) + " |")
    ratio = p1["time_ratio"]
    if "memory" in p1["top6"] and "memory" in p1["all12"]:
        m6, m12 = p1["top6"]["memory"], p1["all12"]["memory"]
        mem_ratios = [f"{m6[k] / m12[k]:.2f}" for k in mem_keys]
    else:
        mem_ratios = [""] * 4
    param_ratio = p1["top6"]["trainable_parameters"] / p1["all12"]["trainable_parameters"]
    print(f"| **ratio top 6 / all 12** (target <= 0.75) | {param_ratio:.2f} | "
          f"**{ratio['wall']:.2f}** | **{ratio['cpu']:.2f}** | " + " | ".join(mem_ratios) + " |")

    p2 = res["fairseq_vs_bare"]
    print("\n| pipeline (top 6 of 12 trainable, same batch) | step, wall (s) | step, CPU (s) "
          "| ratio to bare, wall | ratio to bare, CPU |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key in ("bare_top6", "fairseq_task", "fairseq_trainer"):
        if key in p2["losses"]:
            med, rat = p2["median_s"], p2["ratio_to_bare"]
            target = " (target <= 1.10)" if key == "fairseq_task" else ""
            print(f"| {PIPELINE_NAMES[key]}{target} | {med['wall'][key]:.2f} "
                  f"({spread(p2['step_times_s']['wall'][key])}) | {med['cpu'][key]:.2f} | "
                  f"{rat['wall'][key]:.3f} | {rat['cpu'][key]:.3f} |")

    print("\nVerdicts:")
    for clock in CLOCKS:
        print(f"- {clock}: top 6 / all 12 = {ratio[clock]:.3f} ({verdict(ratio[clock], 0.75)}); "
              f"fairseq task step / bare = {p2['ratio_to_bare'][clock]['fairseq_task']:.3f} "
              f"({verdict(p2['ratio_to_bare'][clock]['fairseq_task'], 1.10)})"
              + (f"; Trainer.train_step / bare = "
                 f"{p2['ratio_to_bare'][clock]['fairseq_trainer']:.3f}"
                 if "fairseq_trainer" in p2["losses"] else ""))
    print(f"- loss agreement with the bare loop over all {p2['compared_steps']} steps: "
          + ", ".join(f"{k} max relative difference {v:.1e}"
                      for k, v in p2["max_rel_loss_diff"].items())
          + " (same weights, seeds and batch: the pipelines do the same work)")

    a = res["adamw_step_alone_s"]
    print(f"\nAdamW step alone on the top-6 trainable parameters "
          f"({a['parameters'] / 1e6:.1f} M), CPU time: torch's default implementation "
          f"{a['cpu']['default']:.3f} s, fused=True (uamix_adamw's default) "
          f"{a['cpu']['fused']:.3f} s ({a['cpu']['default'] / a['cpu']['fused']:.1f}x; wall "
          f"{a['wall']['default']:.3f} s vs {a['wall']['fused']:.3f} s).")

    if "unremix_overhead" in res:
        print_unremix_report(res["unremix_overhead"], c)

    print("\nHow memory is measured: each configuration runs in a fresh Python process "
          "that builds the ViT-B encoder, head, queue and AdamW from scratch (random "
          "weights, no checkpoint read), resets the kernel's RSS high-water mark "
          "(/proc/self/clear_refs; otherwise a child's ru_maxrss starts at its parent's "
          "RSS), records its resident set size, runs two training steps (the first "
          "allocates AdamW's state), and reads the process's peak RSS (getrusage "
          "ru_maxrss). 'RSS growth' = peak minus the RSS just before the first step: "
          "gradients, AdamW state, activations and temporaries, as the OS saw them "
          "(allocator caching included, so an upper bound of live tensor bytes). "
          "'Saved activations' is exact and allocator-free: "
          "the bytes of the tensors autograd saves for backward during one forward pass "
          "(hooked with torch.autograd.graph.saved_tensors_hooks, each storage once, "
          "parameters excluded). 'Grads + AdamW state' = 12 bytes per trainable "
          "parameter (fp32 grad, exp_avg, exp_avg_sq).")


def print_unremix_report(u, c):
    print("\n## UnReMix overhead (--unremix)\n")
    print(f"The fairseq task step (top 6 of 12 trainable, batch {c['batch_size']}) without "
          "and with criterion.unremix=true (default fields: all three terms, minmax, mean "
          "one, floor 0.05), same weights and batch, in the same interleaved rounds. "
          "'per-round ratio' is the median over rounds of (UnReMix step / plain step of "
          "the same round), less sensitive to load changes than the ratio of medians.\n")
    print("| pipeline | step, wall (s) | step, CPU (s) |")
    print("| --- | ---: | ---: |")
    for key in ("fairseq_task", "fairseq_task_unremix"):
        print(f"| {PIPELINE_NAMES[key]} | {u['median_s']['wall'][key]:.3f} "
              f"({spread(u['step_times_s']['wall'][key])}) | {u['median_s']['cpu'][key]:.3f} |")
    for clock in CLOCKS:
        print(f"- {clock}: ratio of medians {u['ratio'][clock]:.3f}, per-round ratio "
              f"{u['per_round_ratio'][clock]:.3f} "
              f"({verdict(u['per_round_ratio'][clock], UNREMIX_TARGET)})")
    print("- the weight computation alone (three weight matrices, one step, 1 thread): "
          + ", ".join(f"global batch {m}: {t['cpu'] * 1e3:.1f} ms CPU ({t['wall'] * 1e3:.1f} "
                      "ms wall)" for m, t in u["weights_alone_s"].items()))


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=None, help="clips per batch (8)")
    parser.add_argument("--num-frames", type=int, default=None,
                        help="fbank frames per clip, multiple of 16 (128)")
    parser.add_argument("--steps", type=int, default=None, help="timed rounds (5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds (1)")
    parser.add_argument("--queue-size", type=int, default=None,
                        help="support queue entries (65536, the method's default)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every measurement (default 1; 0 = torch's "
                        "default, one per core). One thread is the default because on a "
                        "small machine shared with other work, OpenMP threads spend most "
                        "of their time waiting for a sibling that lost its core, which "
                        "makes step times swing several-fold; use 0 on an idle machine")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 4, 64 frames, 2 rounds, queue 4096")
    parser.add_argument("--no-trainer", action="store_true",
                        help="skip fairseq's Trainer.train_step")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the memory subprocesses")
    parser.add_argument("--unremix", action="store_true",
                        help="also time the fairseq task step with criterion.unremix=true "
                        "in the same interleaved rounds, and the UnReMix weights alone")
    parser.add_argument("--out", default="benchmarks/results.json", help="results JSON")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trainable-blocks", type=int, default=PARTIAL_BLOCKS,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = dict(batch_size=8, num_frames=128, steps=5, warmup=1, queue_size=65536)
    if args.quick:
        defaults = dict(batch_size=4, num_frames=64, steps=2, warmup=1, queue_size=4096)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.num_frames % 16 or args.num_frames < 16:
        parser.error("--num-frames must be a positive multiple of 16")
    if args.batch_size < 2:
        parser.error("--batch-size must be >= 2 (batch norm and contrastive negatives)")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def time_adamw_alone(shapes, rounds: int):
    """torch.optim.AdamW.step alone on parameters of the given shapes (random grads):
    the default implementation (what uamix_adamw uses on CPU: a Python loop over
    tensors) against ``fused=True``, interleaved; median seconds per step on both
    clocks."""
    g = torch.Generator().manual_seed(5)
    params = [torch.zeros(s, requires_grad=True) for s in shapes]
    for q in params:
        q.grad = torch.randn(q.shape, generator=g)
    opts = {
        impl: torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS,
                                weight_decay=WEIGHT_DECAY, **kw)
        for impl, kw in (("default", {}), ("fused", {"fused": True}))
    }
    times = {clock: {impl: [] for impl in opts} for clock in CLOCKS}
    for r in range(rounds + 1):
        for impl, opt in opts.items():
            t0 = {clock: fn() for clock, fn in CLOCKS.items()}
            opt.step()
            if r:  # the first step allocates the state
                for clock, fn in CLOCKS.items():
                    times[clock][impl].append(fn() - t0[clock])
    return {clock: {impl: statistics.median(t) for impl, t in per.items()}
            for clock, per in times.items()}


def time_rounds(steppers, warmup: int, steps: int):
    """One step of every pipeline per round, in rotating order. Returns the timed
    seconds per clock and pipeline, and the loss of every step (warm-up included)."""
    names = list(steppers)
    times = {clock: {n: [] for n in names} for clock in CLOCKS}
    losses = {n: [] for n in names}
    for r in range(warmup + steps):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = {clock: fn() for clock, fn in CLOCKS.items()}
            losses[n].append(steppers[n](r))
            if r >= warmup:
                for clock, fn in CLOCKS.items():
                    times[clock][n].append(fn() - t0[clock])
        label = f"  round {r + 1}/{warmup + steps}"
        if r < warmup:
            print(f"{label} (warm-up) done", flush=True)
        else:
            print(f"{label} (wall / CPU s): " + ", ".join(
                f"{n} {times['wall'][n][-1]:.2f} / {times['cpu'][n][-1]:.2f}" for n in names),
                flush=True)
    return times, losses


def main(argv=None):
    args = parse_args(argv)
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(args)
        return

    import logging

    logging.disable(logging.WARNING)  # fairseq's INFO chatter
    import uamix_fairseq  # noqa: F401  (registers the fairseq components)

    started = time.perf_counter()
    machine = machine_info()
    machine["torch_default_threads"] = default_threads
    print(f"bench_training: batch {args.batch_size}, {args.num_frames} frames, "
          f"{args.warmup} warm-up + {args.steps} timed rounds, queue {args.queue_size}, "
          f"{torch.get_num_threads()} torch threads", flush=True)

    # Memory first, while this process is still small (see reset_peak_rss).
    memory = {}
    if not args.no_memory:
        print("memory: one fresh process per configuration...", flush=True)
        for key, k in (("top6", PARTIAL_BLOCKS), ("all12", 12)):
            memory[key] = run_memory_worker(args, k)
            print(f"  {key}: peak RSS {mb(memory[key]['peak_rss_bytes'])} MB", flush=True)

    frontend = FrontendConfig(num_frames=args.num_frames)
    views = ViewConfig()
    wave, lengths, ids = synthetic_batch(args.batch_size, frontend)
    sample = {"id": ids, "nsentences": args.batch_size,
              "net_input": {"waveform": wave, "lengths": lengths}}

    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        ckpt = os.path.join(tmp, "vit_b_random.pth")
        write_random_audiomae(ckpt, EncoderConfig(num_frames=args.num_frames), seed=0)
        cfg = fairseq_config(ckpt, tmp, os.path.join(tmp, "ckpt"), args.num_frames,
                             args.batch_size, args.queue_size)
        unremix_cfg = None
        if args.unremix:
            unremix_cfg = fairseq_config(ckpt, tmp, os.path.join(tmp, "ckpt"), args.num_frames,
                                         args.batch_size, args.queue_size, unremix=True)
        fs_model, loops = build_fairseq(cfg, with_trainer=not args.no_trainer,
                                        unremix_cfg=unremix_cfg)
        head_state = fs_model.head.state_dict()
        encoder6 = load_audiomae(ckpt, num_frames=args.num_frames)
    encoder12 = copy.deepcopy(encoder6)
    for enc in (encoder6, encoder12):
        for p in (enc.cls_token, *enc.patch_embed.parameters()):
            p.requires_grad_(False)
    bare = {
        "bare_top6": build_bare(encoder6, head_state, args.queue_size, PARTIAL_BLOCKS,
                                frontend, views),
        "bare_all12": build_bare(encoder12, head_state, args.queue_size, 12, frontend, views),
    }
    steppers = {name: (lambda lp: lambda r: lp.step(wave, lengths, ids, r))(loop)
                for name, loop in bare.items()}
    steppers.update({name: (lambda lp: lambda r: lp.step(sample, r))(loop)
                     for name, loop in loops.items()})
    print(f"built {len(steppers)} pipelines ({time.perf_counter() - started:.0f} s elapsed); "
          "timing...", flush=True)
    times, losses = time_rounds(steppers, args.warmup, args.steps)
    median = {clock: {n: statistics.median(t) for n, t in per.items()}
              for clock, per in times.items()}

    trainable = {key: bare[name].trainable_parameters()
                 for key, name in (("top6", "bare_top6"), ("all12", "bare_all12"))}
    shapes = [tuple(q.shape) for g in bare["bare_top6"].optimizer.param_groups
              for q in g["params"]]
    encoder_parameters = sum(q.numel() for q in encoder6.parameters())
    del loops, bare, steppers, fs_model, encoder6, encoder12
    print("AdamW step alone (top 6 trainable), default vs fused...", flush=True)
    adamw = time_adamw_alone(shapes, rounds=max(3, args.steps))

    partial = {
        key: {"trainable_blocks": k, "trainable_parameters": trainable[key],
              "median_s": {c: median[c][name] for c in CLOCKS},
              "step_times_s": {c: times[c][name] for c in CLOCKS},
              **({"memory": memory[key]} if key in memory else {})}
        for key, k, name in (("top6", PARTIAL_BLOCKS, "bare_top6"),
                             ("all12", 12, "bare_all12"))
    }
    partial["time_ratio"] = {c: median[c]["bare_top6"] / median[c]["bare_all12"]
                             for c in CLOCKS}
    if memory:
        partial["rss_growth_ratio"] = (memory["top6"]["peak_rss_growth_bytes"]
                                       / memory["all12"]["peak_rss_growth_bytes"])
        partial["saved_activation_ratio"] = (memory["top6"]["saved_activation_bytes"]
                                             / memory["all12"]["saved_activation_bytes"])
    fs_names = [n for n in ("bare_top6", "fairseq_task", "fairseq_trainer") if n in losses]
    ref = losses["bare_top6"]
    fairseq_vs_bare = {
        "median_s": {c: {n: median[c][n] for n in fs_names} for c in CLOCKS},
        "step_times_s": {c: {n: times[c][n] for n in fs_names} for c in CLOCKS},
        "ratio_to_bare": {c: {n: median[c][n] / median[c]["bare_top6"] for n in fs_names}
                          for c in CLOCKS},
        "losses": {n: losses[n] for n in fs_names},
        "compared_steps": len(ref),
        "max_rel_loss_diff": {
            n: max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses[n], ref))
            for n in fs_names if n != "bare_top6"
        },
    }
    if args.unremix:
        names = ("fairseq_task", "fairseq_task_unremix")
        print("UnReMix weights alone...", flush=True)
        results_unremix = {
            "median_s": {c: {n: median[c][n] for n in names} for c in CLOCKS},
            "step_times_s": {c: {n: times[c][n] for n in names} for c in CLOCKS},
            "ratio": {c: median[c][names[1]] / median[c][names[0]] for c in CLOCKS},
            "per_round_ratio": {c: statistics.median(
                a / b for a, b in zip(times[c][names[1]], times[c][names[0]]))
                for c in CLOCKS},
            "losses": {n: losses[n] for n in names},
            "weights_alone_s": time_unremix_weights(
                sorted({args.batch_size, 1024}), rounds=max(3, args.steps)),
        }
    machine["load_average_at_end"] = os.getloadavg()
    results = {
        "machine": machine,
        "config": {"batch_size": args.batch_size, "num_frames": args.num_frames,
                   "num_mel_bins": 128, "tokens": 1 + (args.num_frames // 16) * (128 // 16),
                   "steps": args.steps, "warmup": args.warmup,
                   "queue_size": args.queue_size, "encoder_parameters": encoder_parameters,
                   "quick": args.quick},
        "partial_vs_full": partial,
        "fairseq_vs_bare": fairseq_vs_bare,
        "adamw_step_alone_s": {**adamw, "parameters": trainable["top6"]},
        **({"unremix_overhead": results_unremix} if args.unremix else {}),
        "wall_time_s": time.perf_counter() - started,
    }
    print_report(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwhole run {results['wall_time_s']:.0f} s; results written to {out}")


if __name__ == "__main__":
    main()
