"""Throughput of batched ``compute_fbank`` against kaldi-native-fbank, clip by clip.

    python benchmarks/bench_fbank.py [--clips 32] [--seconds 10] [--repeats 7]

Both get the same float32 clips (16 kHz, mean removed, in [-1, 1]). Ours runs on the
whole [B, N] batch with torch's default number of threads; kaldi-native-fbank (knf) has
no batch API, so it runs one OnlineFbank per clip (accept the whole waveform, flush,
read every frame), single-threaded as it is. knf refuses 128 mel bins at 16 kHz (one
triangle holds no FFT bin), so the head-to-head is at 80 bins; 128 bins is ours alone.
One warm-up run, then the median of ``--repeats`` timed runs. For reference it also
times ours one clip per call, and ours as one [B, T, nfft] pass without the CPU
blocking. The machine's load average is printed: on a shared machine, rerun when idle.
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
import uamix_fairseq.features as features  # noqa: E402
from uamix_fairseq.features import compute_fbank  # noqa: E402

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


STAT = statistics.median  # --best switches to min


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (caches, allocator, thread pool)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return STAT(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32, help="clips per batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs (median reported)")
    parser.add_argument("--best", action="store_true",
                        help="report the fastest run instead of the median (for a shared, busy machine)")
    args = parser.parse_args(argv)
    global STAT
    STAT = min if args.best else statistics.median
    stat_name = "best" if args.best else "median"

    clips = make_clips(args.clips, args.seconds)
    clips_np = [c.numpy() for c in clips]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None

    print(f"platform:      {platform.platform()}")
    print(f"processor:     {platform.processor() or platform.machine()}")
    print(f"cpu count:     {os.cpu_count()}")
    print(f"python:        {platform.python_version()}")
    print(f"torch:         {torch.__version__} (threads: {torch.get_num_threads()})")
    try:
        import kaldi_native_fbank as knf

        print(f"knf:           {getattr(knf, '__version__', '?')}")
        have_knf = True
    except ImportError:
        print("knf:           not installed (pip install kaldi-native-fbank); ours only")
        have_knf = False
    if load:
        print(f"load average:  {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (before the runs)")
    print(f"workload:      {args.clips} clips x {args.seconds:g} s at {SAMPLE_RATE} Hz, "
          f"warm-up + {stat_name} of {args.repeats}")
    print()

    rows = []
    for bins in (80, 128):
        ours = timed(lambda: compute_fbank(clips, num_mel_bins=bins), args.repeats)
        ours_rate = args.clips / ours
        ours_single = timed(lambda: [compute_fbank(c, num_mel_bins=bins) for c in clips], max(1, args.repeats // 2))
        single_rate = args.clips / ours_single
        blocking = features._CPU_BLOCK_BYTES
        features._CPU_BLOCK_BYTES = 1 << 62  # one [B, T, nfft] pass, as on a GPU
        try:
            one_pass_rate = args.clips / timed(lambda: compute_fbank(clips, num_mel_bins=bins), max(1, args.repeats // 2))
        finally:
            features._CPU_BLOCK_BYTES = blocking
        if have_knf and bins == 80:
            opts = knf_options(bins)
            ref = knf_all(clips_np[:1], opts)[0]
            diff = float(np.abs(compute_fbank(clips[0], num_mel_bins=bins).numpy() - ref).max())
            knf_time = timed(lambda: knf_all(clips_np, opts), args.repeats)
            knf_rate = args.clips / knf_time
            rows.append((bins, ours_rate, one_pass_rate, single_rate, knf_rate, ours_rate / knf_rate, diff))
        else:
            rows.append((bins, ours_rate, one_pass_rate, single_rate, None, None, None))

    for bins, ours_rate, one_pass_rate, single_rate, knf_rate, ratio, diff in rows:
        line = (f"{bins:3d} bins: ours batched {ours_rate:7.1f} clips/s | ours batched, no CPU blocking "
                f"{one_pass_rate:7.1f} | ours one by one {single_rate:7.1f}")
        if knf_rate is not None:
            line += f" | knf one by one {knf_rate:7.1f} | ours batched / knf {ratio:5.2f}x"
            line += f" | max |diff| clip 0 {diff:.1e}"
        print(line)

    if load:
        load = os.getloadavg()
        print(f"load average:  {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (after the runs)")
    print()
    print("| mel bins | ours, batched | ours, batched, no CPU blocking | ours, one clip per call "
          "| knf, one clip per call | ours batched / knf |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for bins, ours_rate, one_pass_rate, single_rate, knf_rate, ratio, _ in rows:
        knf_cell = f"{knf_rate:.1f}" if knf_rate is not None else "n/a (refuses)"
        ratio_cell = f"{ratio:.2f}x" if ratio is not None else "-"
        print(f"| {bins} | {ours_rate:.1f} | {one_pass_rate:.1f} | {single_rate:.1f} | {knf_cell} | {ratio_cell} |")
    print("(clips/s, higher is better)")


if __name__ == "__main__":
    main()
