"""The uaMix tuning step and the batched fbank on a GPU, with nothing but PyTorch.

    PYTHONPATH=. python benchmarks/bench_gpu.py [--device cuda|cpu] [--batch-size 64]
        [--num-frames 1024] [--queue-size 65536] [--steps 10] [--warmup 3]
        [--peak-tflops 989] [--compile] [--tiny] [--json OUT.json]

Imports only the plain-PyTorch parts of the package (encoder, head, queue, losses,
views, mixing, fbank, compile helper): no fairseq, numpy or soundfile, so it runs
wherever a CUDA PyTorch does (``benchmarks/gpu_check.sh`` runs it on a bare machine).

What it measures, on one synthetic batch of waveforms already on the device:

1. The tuning step, as the fairseq task and criterion run it (benchmarks/bench_training
   .py checks that this bare loop computes what fairseq computes): batched fbank of the
   waveforms, two views, T-CutMix of view 1, view 1 + view 2 + mixture through a
   ViT-B/16 AudioMAE-shaped encoder (768 wide, 12 blocks, 12 heads, 1,024 frames x 128
   mel bins = 512 patches + cls = 513 tokens) as one batch, the NNCLR projector
   768-2048-2048-256 and predictor 256-4096-256 per view, nearest neighbours in a full
   65,536-entry support queue, NNCLR + soft-target losses, backward, AdamW (fused on
   CUDA), queue update. On CUDA in bf16 autocast (losses in float32), with attention
   through ``F.scaled_dot_product_attention`` (the fused kernels usable at this shape
   are probed and reported). Twice: top 6 of 12 blocks trainable (the recipe's stage;
   the lower 6, the patch embedding and positions run without autograd) and all 12.
   Each configuration is built afresh from the same seed; median step time over
   ``--steps`` after ``--warmup`` untimed steps, with ``torch.cuda.synchronize()``
   around every step.
2. Peak memory of each configuration: ``torch.cuda.max_memory_allocated`` after a
   reset, over its steps (weights, gradients, AdamW state, activations, queue). On CPU
   the process's peak RSS (``ru_maxrss``) after resetting the kernel's high-water mark
   (``/proc/self/clear_refs``), which also counts Python and torch themselves; null when
   the mark cannot be reset. The keys are the same on both.
3. Model FLOP utilisation, ``mfu = flops / step_time / (peak_tflops * 1e12)``, with the
   step's FLOPs counted analytically from the shapes (``step_flops``; multiply-add = 2
   FLOPs). With S = 3B encoder sequences (B clips x {view 1, view 2, mixture}), L = N + 1
   tokens, width D, MLP width H, d blocks of which k trainable, patch p x p:

       block forward, per sequence:  F_blk = 2 L (4 D^2 + 2 D H) + 4 L^2 D
                                     (qkv 3D^2 + proj D^2 + fc1/fc2 2DH; QK^T and AV)
       encoder forward:              S (2 N D p^2 + d F_blk)       (patch embed + blocks)
       encoder backward:             S k 2 F_blk                    (trainable blocks only)
       head (3 views):               3 x 3B x F_head, F_head = 2 x (its weight entries)
       queue neighbours:             2 x 2 B Q out                  (views 1 and 2; no grad)
       losses:                       3 x 2 x 2 B^2 out              (3 logit matrices,
                                                                     forward + grad of one side)

   Backward costs 2x forward (input and weight gradients) for every trainable block and
   the head. The frozen prefix (patch embedding and the lower d - k blocks) runs under
   ``torch.no_grad()``: it costs its forward only, no backward at all (not even input
   gradients, since nothing below the first trainable block needs one). So the
   top-6/all-12 step ratio cannot go below (d + 2k) / 3d = 2/3 in FLOPs for k = 6,
   d = 12. Not counted: fbank, views, mixing, normalisations, softmax, AdamW (memory
   bound), and flash attention's recomputation of QK^T in its backward (MFU counts model
   FLOPs, not hardware FLOPs). ``--peak-tflops``: the device's dense bf16 peak, 989 for
   H100/H200 SXM; on CPU pass the CPU's own figure, or read ``mfu`` as meaningless.
4. Batched ``compute_fbank`` throughput for 10 s clips at 16 kHz (clips/s): a batch on
   the device, and on the CPU of the same machine (torch's threads there), and their
   ratio.
5. ``--compile``: the top-6 step again with the encoder's blocks compiled in place
   (``uamix_fairseq.modules.compiling``), first step (compilation) timed apart.

Targets (issue 13), reported as measured, never a failure: top-6/all-12 step <= 0.70,
MFU >= 40% (bf16), GPU fbank >= 100x the CPU figure.

``--tiny``: a 4-block 64-wide encoder on 64 frames, batch 4, queue 256, for CPU tests;
same keys.
"""

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig  # noqa: E402
from uamix_fairseq.modules.compiling import (  # noqa: E402
    compile_encoder_blocks,
    compile_unsupported_reason,
)
from uamix_fairseq.audio.features import compute_fbank  # noqa: E402
from uamix_fairseq.audio.frontend import FrontendConfig, batch_fbank, model_input  # noqa: E402
from uamix_fairseq.modules.mixing import mix_batch  # noqa: E402
from uamix_fairseq.modules.nnclr import NNCLRHead, SupportQueue, nnclr_loss, soft_target_loss  # noqa: E402
from uamix_fairseq.modules.views import ViewConfig, two_views  # noqa: E402

# The method's defaults (docs/method.md, "Reconstructed choices at a glance"), as in
# bench_training.py.
LR, BETAS, EPS = 1e-4, (0.9, 0.95), 1e-8
WEIGHT_DECAY, HEAD_WEIGHT_DECAY, LAYER_DECAY = 0.05, 1e-5, 0.65
TEMPERATURE = 0.15
SAMPLE_RATE = 16000
FBANK_SECONDS = 10.0
TARGETS = {"step_time_ratio": 0.70, "mfu": 0.40, "fbank_speedup": 100.0}

FULL = dict(encoder=dict(embed_dim=768, depth=12, num_heads=12, num_frames=1024),
            head=dict(proj_hidden_dim=2048, out_dim=256, pred_hidden_dim=4096),
            batch_size=64, queue_size=65536, trainable_blocks=6, steps=10, warmup=3,
            fbank_clips=256, fbank_cpu_clips=32, fbank_repeats=5)
TINY = dict(encoder=dict(embed_dim=64, depth=4, num_heads=2, num_frames=64),
            head=dict(proj_hidden_dim=64, out_dim=32, pred_hidden_dim=64),
            batch_size=4, queue_size=256, trainable_blocks=2, steps=2, warmup=1,
            fbank_clips=2, fbank_cpu_clips=2, fbank_repeats=2)


# --------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------


def head_weights(head: NNCLRHead) -> int:
    """Entries of the head's weight matrices (what its matmuls multiply by)."""
    return sum(m.weight.numel() for m in head.modules() if isinstance(m, torch.nn.Linear))


def step_flops(cfg: EncoderConfig, batch_size: int, trainable_blocks: int,
               head_weight_entries: int, queue_size: int, out_dim: int) -> dict:
    """Model FLOPs of one tuning step, by part (see the module docstring)."""
    d, depth, k = cfg.embed_dim, cfg.depth, trainable_blocks
    hidden = int(d * cfg.mlp_ratio)
    n = cfg.num_patches
    tokens = n + 1
    seqs = 3 * batch_size
    block = 2 * tokens * (4 * d * d + 2 * d * hidden) + 4 * tokens * tokens * d
    parts = {
        "encoder_forward": seqs * (2 * n * d * cfg.patch_size ** 2 + depth * block),
        "encoder_backward": seqs * k * 2 * block,
        "head": 3 * seqs * 2 * head_weight_entries,
        "queue_neighbours": 2 * 2 * batch_size * queue_size * out_dim,
        "losses": 3 * 2 * 2 * batch_size * batch_size * out_dim,
    }
    parts["total"] = sum(parts.values())
    return parts


# --------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------


def synthetic_waveforms(batch_size: int, samples: int, device, seed: int = 1234):
    g = torch.Generator().manual_seed(seed)
    wave = (0.1 * torch.randn(batch_size, samples, generator=g)).clamp(-0.9, 0.9)
    wave = wave - wave.mean(dim=1, keepdim=True)
    return wave.to(device)


def param_groups(encoder: AudioMAEEncoder, head: NNCLRHead, trainable_blocks: int):
    """AdamW groups of the trainable parameters only (as uamix_adamw builds them): top
    blocks at lr * decay^(depth - i), final norm and head at lr, no decay on biases and
    norms."""

    def split(params, lr, wd):
        params = list(params)
        return [{"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": wd},
                {"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0}]

    depth = encoder.depth
    groups = []
    for i in range(depth - trainable_blocks, depth):
        groups += split(encoder.blocks[i].parameters(), LR * LAYER_DECAY ** (depth - i),
                        WEIGHT_DECAY)
    if trainable_blocks > 0:
        groups += split(encoder.norm.parameters(), LR, 0.0)
    groups += split(head.parameters(), LR, HEAD_WEIGHT_DECAY)
    return [g for g in groups if g["params"]]


class TuningStep:
    """One uaMix tuning step with the plain modules (the bare loop of bench_training.py,
    on any device, optionally in bf16 autocast)."""

    def __init__(self, setup: dict, trainable_blocks: int, device, autocast: bool,
                 compile_blocks: bool = False, seed: int = 0):
        torch.manual_seed(seed)
        self.device, self.autocast = device, autocast
        self.enc_cfg = EncoderConfig(**setup["encoder"])
        self.frontend = FrontendConfig(num_frames=self.enc_cfg.num_frames)
        self.views = ViewConfig()
        self.encoder = AudioMAEEncoder(self.enc_cfg).to(device).train()
        for p in (self.encoder.cls_token, *self.encoder.patch_embed.parameters()):
            p.requires_grad_(False)
        if compile_blocks:
            compile_encoder_blocks(self.encoder)
        self.head = NNCLRHead(self.enc_cfg.embed_dim, **setup["head"]).to(device).train()
        out_dim = setup["head"]["out_dim"]
        self.queue = SupportQueue(setup["queue_size"], out_dim).to(device)
        g = torch.Generator().manual_seed(99)  # a full queue of other clips' projections
        feats = F.normalize(torch.randn(self.queue.size, out_dim, generator=g), dim=1)
        self.queue.push(feats.to(device),
                        torch.arange(self.queue.size, dtype=torch.float64, device=device) + 1e6)
        self.trainable_blocks = trainable_blocks
        self.optimizer = torch.optim.AdamW(
            param_groups(self.encoder, self.head, trainable_blocks), lr=LR, betas=BETAS,
            eps=EPS, fused=True)
        b = setup["batch_size"]
        self.wave = synthetic_waveforms(b, self.frontend.max_samples, device)
        self.lengths = torch.full((b,), self.frontend.max_samples, dtype=torch.long)
        self.ids = torch.arange(b, device=device)
        self.flops = step_flops(self.enc_cfg, b, trainable_blocks, head_weights(self.head),
                                self.queue.size, out_dim)
        self.trainable_parameters = sum(p.numel() for g in self.optimizer.param_groups
                                        for p in g["params"])
        self.update = 0

    def forward_loss(self):
        b = self.wave.shape[0]
        view_gen = torch.Generator().manual_seed(7919 + self.update)
        gen = torch.Generator().manual_seed(1_000_003 + self.update)
        with torch.no_grad():
            fbank, valid = batch_fbank(self.wave, self.lengths, self.frontend)
            x1, x2 = two_views(fbank, valid, self.views, view_gen)
            v1, v2 = model_input(x1, self.frontend), model_input(x2, self.frontend)
            mixed, lam, partner = mix_batch(v1, "tcutmix", 1.0, "reverse", 1, gen)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            tokens = self.encoder(torch.cat([v1, v2, mixed]),
                                  trainable_blocks=self.trainable_blocks)
            pooled = self.encoder.pool(tokens).split(b)
            (z1, p1), (z2, p2), (_, pm) = (self.head(y) for y in pooled)
        z1, z2, p1, p2, pm = (t.float() for t in (z1, z2, p1, p2, pm))
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
        nn1 = self.queue.nearest(z1, self.ids, 1, gen)
        nn2 = self.queue.nearest(z2, self.ids, 1, gen)
        own = torch.arange(b, device=self.device)
        loss12, _ = nnclr_loss(nn1, p2, own, TEMPERATURE)
        loss21, _ = nnclr_loss(nn2, p1, own, TEMPERATURE)
        mix, _ = soft_target_loss(pm, nn2, lam, own, partner, TEMPERATURE)
        self.queue.push(z1.detach(), self.ids)
        return 0.5 * (loss12 + loss21) + mix

    def step(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward_loss()
        (loss / self.wave.shape[0]).backward()
        self.optimizer.step()
        self.update += 1
        return float(loss.detach())


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def reset_peak_memory(device) -> bool:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux >= 4.0: reset the RSS high-water mark that ru_maxrss reports
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_step(setup, trainable_blocks, device, autocast, steps, warmup,
                 compile_blocks=False):
    """Median step time, peak memory and FLOPs of one configuration."""
    run = TuningStep(setup, trainable_blocks, device, autocast, compile_blocks)
    first_s = None
    reset = reset_peak_memory(device)
    for i in range(warmup):
        t, _ = timed(run.step, device)
        first_s = t if i == 0 else first_s
    times, losses = [], []
    for _ in range(steps):
        t, loss = timed(run.step, device)
        times.append(t)
        losses.append(loss)
    out = {
        "trainable_blocks": trainable_blocks,
        "trainable_parameters": run.trainable_parameters,
        "step_time_s": statistics.median(times),
        "step_times_s": times,
        "first_step_s": first_s,
        "losses": losses,
        "peak_memory_bytes": peak_memory(device) if reset else None,
        "flops": run.flops,
    }
    del run
    free(device)
    return out


def fbank_throughput(device, clips: int, repeats: int) -> float:
    """Clips per second of compute_fbank on a [clips, 10 s] batch (median of repeats)."""
    wave = synthetic_waveforms(clips, int(FBANK_SECONDS * SAMPLE_RATE), device, seed=5)
    compute_fbank(wave)  # warm-up: caches the window and the bank, wakes the kernels
    times = [timed(lambda: compute_fbank(wave), device)[0] for _ in range(repeats)]
    return clips / statistics.median(times)


def usable_attention_kernels(device, cfg: EncoderConfig, batch: int):
    """Fused SDPA kernels that run at the encoder's attention shape in bf16 (CUDA)."""
    if device.type != "cuda":
        return ["cpu (flash attention for CPU / math)"]
    from torch.nn.attention import SDPBackend, sdpa_kernel

    h, dh = cfg.num_heads, cfg.embed_dim // cfg.num_heads
    q = torch.randn(batch, h, cfg.num_patches + 1, dh, device=device, dtype=torch.bfloat16)
    usable = []
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, q, q)
            usable.append(name.lower())
        except RuntimeError:
            pass
    return usable


def machine(device):
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, cuda=torch.version.cuda,
                    device_memory_bytes=props.total_memory)
    else:
        info["device_name"] = platform.processor() or "cpu"
    return info


def run(args) -> dict:
    setup = dict(TINY if args.tiny else FULL)
    for key in ("batch_size", "queue_size", "steps", "warmup"):
        if getattr(args, key) is not None:
            setup[key] = getattr(args, key)
    if args.num_frames is not None:
        setup["encoder"] = {**setup["encoder"], "num_frames": args.num_frames}
    device = torch.device(args.device)
    autocast = device.type == "cuda" and not args.fp32
    depth, k = setup["encoder"]["depth"], setup["trainable_blocks"]
    enc_cfg = EncoderConfig(**setup["encoder"])

    res = {"machine": machine(device),
           "config": {"encoder": setup["encoder"], "head": setup["head"],
                      "tokens_per_sequence": enc_cfg.num_patches + 1,
                      "batch_size": setup["batch_size"],
                      "encoder_sequences_per_step": 3 * setup["batch_size"],
                      "queue_size": setup["queue_size"], "depth": depth,
                      "trainable_blocks_partial": k, "steps": setup["steps"],
                      "warmup": setup["warmup"], "tiny": args.tiny,
                      "precision": "bf16 autocast" if autocast else "float32",
                      "peak_tflops": args.peak_tflops},
           "attention_kernels": usable_attention_kernels(device, enc_cfg, 2)}
    peak = args.peak_tflops * 1e12
    for name, blocks in (("partial", k), ("full", depth)):
        r = measure_step(setup, blocks, device, autocast, setup["steps"], setup["warmup"])
        res[name] = r
        res[f"step_time_{name}_s"] = r["step_time_s"]
        res[f"peak_memory_{name}_bytes"] = r["peak_memory_bytes"]
        res[f"flops_{name}"] = r["flops"]["total"]
        res[f"mfu_{name}"] = r["flops"]["total"] / r["step_time_s"] / peak
    res["step_time_ratio"] = res["step_time_partial_s"] / res["step_time_full_s"]
    res["flops_ratio"] = res["flops_partial"] / res["flops_full"]
    res["mfu"] = res["mfu_partial"]
    res["peak_memory_kind"] = (
        "torch.cuda.max_memory_allocated" if device.type == "cuda" else
        "process peak RSS (ru_maxrss after a high-water-mark reset)"
        if res["peak_memory_partial_bytes"] is not None else None)

    res["fbank_clip_seconds"] = FBANK_SECONDS
    res["fbank_clips_per_s_device"] = fbank_throughput(device, setup["fbank_clips"],
                                                       setup["fbank_repeats"])
    res["fbank_clips_per_s_cpu"] = fbank_throughput(torch.device("cpu"),
                                                    setup["fbank_cpu_clips"],
                                                    setup["fbank_repeats"])
    res["fbank_speedup"] = res["fbank_clips_per_s_device"] / res["fbank_clips_per_s_cpu"]

    res["compile"] = None
    if args.compile:
        reason = compile_unsupported_reason(device.type)
        if reason:
            res["compile"] = {"error": reason}
        else:
            r = measure_step(setup, k, device, autocast, setup["steps"],
                             max(1, setup["warmup"]), compile_blocks=True)
            res["compile"] = {"step_time_s": r["step_time_s"],
                              "first_step_s": r["first_step_s"],
                              "speedup_vs_eager": res["step_time_partial_s"] / r["step_time_s"],
                              "mfu": r["flops"]["total"] / r["step_time_s"] / peak,
                              "peak_memory_bytes": r["peak_memory_bytes"]}
    res["targets"] = {key: {"target": t, "measured": res[key],
                            "met": res[key] <= t if key == "step_time_ratio" else res[key] >= t}
                      for key, t in TARGETS.items()}
    return res


def gib(n):
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def print_table(res):
    m, c = res["machine"], res["config"]
    print(f"\n## bench_gpu on {m['device_name']} ({m['device']}), torch {m['torch']}, "
          f"Python {m['python']}")
    print(f"encoder {c['encoder']}, {c['tokens_per_sequence']} tokens; batch "
          f"{c['batch_size']} clips -> {c['encoder_sequences_per_step']} sequences; queue "
          f"{c['queue_size']}; {c['precision']}; attention kernels usable: "
          f"{', '.join(res['attention_kernels']) or 'none fused'}")
    d, k = c["depth"], c["trainable_blocks_partial"]
    print("\n| configuration | step (s) | peak memory | GFLOP/step | MFU |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, label in (("partial", f"top {k} of {d} trainable"), ("full", f"all {d} trainable")):
        print(f"| {label} | {res[f'step_time_{name}_s']:.4f} | "
              f"{gib(res[f'peak_memory_{name}_bytes'])} | {res[f'flops_{name}'] / 1e9:,.1f} | "
              f"{100 * res[f'mfu_{name}']:.3g}% |")
    if res["compile"]:
        cc = res["compile"]
        if "error" in cc:
            print(f"| top {k}, compiled | not run: {cc['error']} | | | |")
        else:
            print(f"| top {k}, blocks compiled | {cc['step_time_s']:.4f} | "
                  f"{gib(cc['peak_memory_bytes'])} | | {100 * cc['mfu']:.3g}% |")
    print(f"\nstep ratio top {k}/all {d}: {res['step_time_ratio']:.3f} (FLOP ratio "
          f"{res['flops_ratio']:.3f}); MFU at {c['peak_tflops']} TFLOP/s peak")
    print(f"fbank, 10 s clips: {res['fbank_clips_per_s_device']:.1f} clips/s on "
          f"{m['device']}, {res['fbank_clips_per_s_cpu']:.1f} clips/s on this machine's CPU "
          f"({m['torch_threads']} threads): {res['fbank_speedup']:.1f}x")
    for key, t in res["targets"].items():
        print(f"target {key}: measured {t['measured']:.3f}, target "
              f"{'<=' if key == 'step_time_ratio' else '>='} {t['target']}: "
              f"{'met' if t['met'] else 'NOT met'}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, help="clips per step (64; --tiny 4)")
    p.add_argument("--num-frames", type=int, help="fbank frames per clip (1024; --tiny 64)")
    p.add_argument("--queue-size", type=int, help="support queue entries (65536; --tiny 256)")
    p.add_argument("--steps", type=int, help="timed steps per configuration (10)")
    p.add_argument("--warmup", type=int, help="untimed steps first (3)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="dense bf16 peak of the device in TFLOP/s (989: H100/H200 SXM)")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true",
                   help="also time the top-k step with the encoder's blocks compiled")
    p.add_argument("--tiny", action="store_true", help="tiny shapes: seconds on a CPU")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False; use --device cpu")
    return args


def main(argv=None):
    args = parse_args(argv)
    res = run(args)
    print_table(res)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"\nwrote {args.json}")
    return res


if __name__ == "__main__":
    main()
