"""Correctness checks of the GPU path, with nothing but PyTorch (no pytest, no fairseq).

    PYTHONPATH=. python benchmarks/cuda_checks.py [--device cuda]

Each check compares the accelerated path with an independent reference on the same
inputs and raises AssertionError with the measured difference when it is off:

- ``fbank_matches_cpu``: batched ``compute_fbank`` on the device equals the CPU result
  (float32 on both; FFT and log differ by rounding only).
- ``bf16_encoder_close_to_fp32``: a ViT-B-shaped AudioMAE encoder under bf16 autocast
  (what the recipes train in) gives pooled embeddings within cosine 0.99 of the same
  encoder in float32, and every token finite.
- ``frozen_prefix_keeps_no_graph``: with the top k blocks trainable, the frozen blocks
  and the patch embedding get no gradient (None, not zeros) after a backward through
  the encoder, on the device and in bf16.

``benchmarks/gpu_check.sh`` runs this file on a fresh GPU machine; the test suite runs
the same functions on CPU (``tests/test_cuda_checks.py``), so they cannot rot.
Exit status 0 when every check passes, 1 otherwise.
"""

import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig  # noqa: E402
from uamix_fairseq.audio.features import compute_fbank  # noqa: E402


def _test_waveforms(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Chirps plus noise at different levels: a spread of spectra and loudness."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000.0
    rows = []
    for i in range(batch):
        f0 = 200.0 * (i + 1)
        chirp = torch.sin(2 * math.pi * (f0 * t + 300.0 * t * t))
        rows.append(0.3 * chirp / (i + 1) + 0.01 * torch.randn(n, generator=g))
    return torch.stack(rows)


def fbank_matches_cpu(device: str, batch: int = 4, seconds: float = 2.0) -> dict:
    wav = _test_waveforms(batch, seconds)
    ref = compute_fbank(wav)
    out = compute_fbank(wav.to(device))
    assert out.device.type == torch.device(device).type, out.device
    diff = (out.float().cpu() - ref).abs().max().item()
    # Log-mel values are O(10); 1e-3 is float32 rounding through an FFT and a log.
    assert diff <= 1e-3, f"fbank on {device} differs from CPU by {diff:.3g} (allowed 1e-3)"
    return {"max_abs_diff": diff}


def _encoder(cfg: EncoderConfig, device: str) -> AudioMAEEncoder:
    torch.manual_seed(0)
    return AudioMAEEncoder(cfg).to(device)


def bf16_encoder_close_to_fp32(device: str, cfg: EncoderConfig = None,
                               batch: int = 4) -> dict:
    cfg = cfg or EncoderConfig(num_frames=256)  # ViT-B/16, 2.56 s: 128 patches
    enc = _encoder(cfg, device).eval()
    x = torch.randn(batch, 1, cfg.num_frames, cfg.num_mel_bins,
                    generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        ref = enc(x)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            low = enc(x)
    assert torch.isfinite(low).all(), "bf16 tokens are not all finite"
    cos = torch.nn.functional.cosine_similarity(low.float().mean(1), ref.mean(1), dim=-1)
    assert cos.min().item() >= 0.99, f"bf16 pooled embedding cosine {cos.min().item():.4f} < 0.99"
    return {"min_cosine": cos.min().item(),
            "max_abs_diff": (low.float() - ref).abs().max().item()}


def frozen_prefix_keeps_no_graph(device: str, cfg: EncoderConfig = None,
                                 trainable: int = 2) -> dict:
    cfg = cfg or EncoderConfig(embed_dim=192, depth=4, num_heads=3, num_frames=128)
    enc = _encoder(cfg, device).train()
    x = torch.randn(2, 1, cfg.num_frames, cfg.num_mel_bins).to(device)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        out = enc(x, trainable_blocks=trainable)
    out.float().square().mean().backward()
    frozen = set(id(p) for p in enc.frozen_parameters(trainable))
    wrong = [n for n, p in enc.named_parameters() if id(p) in frozen and p.grad is not None]
    missing = [n for n, p in enc.named_parameters()
               if id(p) not in frozen and p.requires_grad and p.grad is None
               and n.startswith("blocks.")]
    assert not wrong, f"frozen parameters got gradients: {wrong[:3]}"
    assert not missing, f"trainable block parameters got no gradient: {missing[:3]}"
    return {"frozen_parameters": len(frozen)}


CHECKS = (fbank_matches_cpu, bf16_encoder_close_to_fp32, frozen_prefix_keeps_no_graph)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
        return 1
    failed = 0
    for check in CHECKS:
        start = time.perf_counter()
        try:
            result = check(args.device)
            print(f"PASS {check.__name__} ({time.perf_counter() - start:.1f} s) {result}")
        except AssertionError as e:
            failed += 1
            print(f"FAIL {check.__name__}: {e}")
    print(f"{len(CHECKS) - failed} of {len(CHECKS)} checks passed on {args.device}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
