"""Throughput of batched ``compute_fbank`` against kaldi-native-fbank, clip by clip.

    python benchmarks/bench_fbank.py [--clips 32] [--seconds 10] [--repeats 7]

Both get the same float32 clips (16 kHz, mean removed, in [-1, 1]). Ours runs on the
whole [B, N] batch with torch's default number of threads; kaldi-native-fbank (knf) has
no batch API, so it runs one OnlineFbank per clip (accept the whole waveform, flush,
read every frame), single-threaded as it is. knf refuses 128 mel bins at 16 kHz (one
triangle holds no FFT bin), so the head-to-head is at 80 bins; 128 bins is ours alone.
One warm-up run of every case, then ``--repeats`` rounds in which every case runs once
in turn; the median (``--best``: the fastest) run is reported. For reference it also
times ours one clip per call, and ours as one [B, T, nfft] pass without the CPU
blocking. The load average is printed: on a shared machine, rerun when it is idle.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import uamix_fairseq.audio.features as features  # noqa: E402
from uamix_fairseq.audio.features import compute_fbank  # noqa: E402

SAMPLE_RATE = 16000


def make_clips(n_clips: int, seconds: float) -> torch.Tensor:
    """Deterministic noise-like clips, peak ~0.5, mean removed: [n_clips, N] float32."""
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(n_clips, int(seconds * SAMPLE_RATE), generator=g)
    x = x.clamp(-0.5, 0.5)
    return x - x.mean(dim=-1, keepdim=True)


def knf_options(num_bins: int):
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    fo = opts.frame_opts
    fo.samp_freq = float(SAMPLE_RATE)
    fo.dither = 0.0
    fo.snip_edges = True
    fo.window_type = "hanning"
    fo.preemph_coeff = 0.97
    fo.remove_dc_offset = True
    opts.mel_opts.num_bins = num_bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.use_energy = False
    opts.htk_compat = True
    return opts


def knf_all(clips_np, opts):
    import kaldi_native_fbank as knf

    out = []
    for clip in clips_np:
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(float(SAMPLE_RATE), clip)
        fb.input_finished()
        out.append(np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)]))
    return out


def one_pass(fn):
    """Run ``fn`` with the CPU blocking switched off: one [B, T, nfft] pass, as on a GPU."""

    def run():
        saved = features._CPU_BLOCK_BYTES
        features._CPU_BLOCK_BYTES = 1 << 62
        try:
            return fn()
        finally:
            features._CPU_BLOCK_BYTES = saved

    return run


def time_round_robin(cases: dict, repeats: int) -> dict:
    """Seconds per run of each case: a warm-up of each, then ``repeats`` rounds that run
    every case once in turn (so a change of machine load hits all cases alike)."""
    for fn in cases.values():
        fn()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32, help="clips per batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--best", action="store_true",
                        help="report the fastest run instead of the median (for a shared, busy machine)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads(N) first; 0 (default) leaves torch's default")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    stat, stat_name = (min, "best") if args.best else (statistics.median, "median")

    clips = make_clips(args.clips, args.seconds)
    clips_np = [c.numpy() for c in clips]
    try:
        import kaldi_native_fbank as knf

        knf_version = getattr(knf, "__version__", "?")
    except ImportError:
        knf_version = None

    print(f"platform:      {platform.platform()}")
    print(f"processor:     {platform.processor() or platform.machine()}")
    print(f"cpu count:     {os.cpu_count()}")
    print(f"python:        {platform.python_version()}")
    print(f"torch:         {torch.__version__} (threads: {torch.get_num_threads()})")
    print(f"knf:           {knf_version or 'not installed (pip install kaldi-native-fbank); ours only'}")
    if hasattr(os, "getloadavg"):
        print("load average:  %.2f %.2f %.2f (before the runs)" % os.getloadavg())
    print(f"workload:      {args.clips} clips x {args.seconds:g} s at {SAMPLE_RATE} Hz, "
          f"warm-up + {stat_name} of {args.repeats} round-robin rounds")
    print()

    cases = {}
    for bins in (80, 128):
        batched = (lambda b: lambda: compute_fbank(clips, num_mel_bins=b))(bins)
        cases[("ours", bins)] = batched
        cases[("ours_one_pass", bins)] = one_pass(batched)
        cases[("ours_per_clip", bins)] = (lambda b: lambda: [compute_fbank(c, num_mel_bins=b) for c in clips])(bins)
    diff = None
    if knf_version:
        opts = knf_options(80)  # knf refuses 128 bins at 16 kHz
        cases[("knf", 80)] = lambda: knf_all(clips_np, opts)
        ref = knf_all(clips_np[:1], opts)[0]
        diff = float(np.abs(compute_fbank(clips[0], num_mel_bins=80).numpy() - ref).max())

    times = time_round_robin(cases, args.repeats)
    rate = {key: args.clips / stat(t) for key, t in times.items()}

    for bins in (80, 128):
        line = (f"{bins:3d} bins: ours batched {rate['ours', bins]:7.1f} clips/s | ours batched, no CPU blocking "
                f"{rate['ours_one_pass', bins]:7.1f} | ours one clip per call {rate['ours_per_clip', bins]:7.1f}")
        if ("knf", bins) in rate:
            line += (f" | knf one clip per call {rate['knf', bins]:7.1f} | ours batched / knf "
                     f"{rate['ours', bins] / rate['knf', bins]:5.2f}x")
        print(line)
    if diff is not None:
        print(f"max |ours - knf| on clip 0 at 80 bins: {diff:.1e}")
    if hasattr(os, "getloadavg"):
        print("load average:  %.2f %.2f %.2f (after the runs)" % os.getloadavg())

    print()
    print("| mel bins | ours, batched | ours, batched, no CPU blocking | ours, one clip per call "
          "| knf, one clip per call | ours batched / knf |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for bins in (80, 128):
        if ("knf", bins) in rate:
            knf_cell, ratio_cell = f"{rate['knf', bins]:.1f}", f"{rate['ours', bins] / rate['knf', bins]:.2f}x"
        else:
            knf_cell, ratio_cell = "n/a (refuses 128 bins at 16 kHz)" if knf_version else "n/a", "-"
        print(f"| {bins} | {rate['ours', bins]:.1f} | {rate['ours_one_pass', bins]:.1f} | "
              f"{rate['ours_per_clip', bins]:.1f} | {knf_cell} | {ratio_cell} |")
    print(f"(clips/s, {stat_name} of {args.repeats}; higher is better)")


if __name__ == "__main__":
    main()
