"""benchmarks/bench_gpu.py: runs without fairseq (or numpy/soundfile), writes the keys
the GPU report needs, and counts the step's FLOPs as torch's own counter does."""

import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks", "bench_gpu.py")
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

# Run the script as __main__ with these packages made unimportable (sys.modules[name] =
# None reads as "not installed"), then fail if any of them, or anything of fairseq's,
# got imported after all.
BLOCKED = ("fairseq", "fairseq_cli", "omegaconf", "hydra", "numpy", "soundfile", "scipy")
RUNNER = """
import runpy, sys
blocked = {blocked!r}
for name in blocked:
    sys.modules[name] = None
sys.argv = {argv!r}
runpy.run_path(sys.argv[0], run_name="__main__")
loaded = sorted(m for m, mod in sys.modules.items()
                if mod is not None and m.split(".")[0] in blocked)
assert not loaded, loaded
print("NO_BLOCKED_IMPORTS")
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bench") / "OUT.json")
    argv = [BENCH, "--device", "cpu", "--tiny", "--json", out]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", RUNNER.format(blocked=BLOCKED, argv=argv)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f), proc.stdout


def test_runs_without_fairseq_numpy_or_soundfile(tiny_run):
    _, stdout = tiny_run
    assert "NO_BLOCKED_IMPORTS" in stdout
    assert "| top 2 of 4 trainable |" in stdout and "fbank, 10 s clips" in stdout


def test_keys_and_sanity(tiny_run):
    res, _ = tiny_run
    for key in ("step_time_partial_s", "step_time_full_s", "step_time_ratio",
                "peak_memory_partial_bytes", "peak_memory_full_bytes", "peak_memory_kind",
                "flops_partial", "flops_full", "mfu_partial", "mfu_full", "mfu",
                "fbank_clips_per_s_device", "fbank_clips_per_s_cpu", "fbank_speedup",
                "compile", "targets", "machine", "config", "attention_kernels"):
        assert key in res, key
    t6, t12 = res["step_time_partial_s"], res["step_time_full_s"]
    assert t6 > 0 and t12 > 0
    assert res["step_time_ratio"] == pytest.approx(t6 / t12, rel=1e-12)
    peak = res["config"]["peak_tflops"] * 1e12
    assert res["config"]["peak_tflops"] == 989.0
    for name in ("partial", "full"):
        assert res[f"mfu_{name}"] == pytest.approx(
            res[f"flops_{name}"] / res[f"step_time_{name}_s"] / peak, rel=1e-12)
        # Linux can reset the RSS high-water mark, so the CPU figure is a number here.
        assert res[f"peak_memory_{name}_bytes"] > 0
        assert len(res[name]["losses"]) == res["config"]["steps"]
        assert all(l == l and abs(l) < 1e6 for l in res[name]["losses"])  # finite
    assert res["mfu"] == res["mfu_partial"]
    assert res["flops_partial"] < res["flops_full"]
    assert res["peak_memory_kind"].startswith("process peak RSS")
    assert res["fbank_clips_per_s_device"] > 0 and res["fbank_clips_per_s_cpu"] > 0
    assert res["fbank_speedup"] == pytest.approx(
        res["fbank_clips_per_s_device"] / res["fbank_clips_per_s_cpu"], rel=1e-12)
    assert res["compile"] is None  # not asked for
    assert res["targets"]["mfu"]["measured"] == res["mfu"]


@pytest.mark.parametrize("trainable", [2, 4])
def test_flop_formula_matches_torch_flop_counter(trainable):
    """The analytic count equals torch's FlopCounterMode over the same forward and
    backward (math attention, so that attention is counted as its two bmms), apart from
    the fbank's mel matmul, which the formula leaves out on purpose."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    import bench_gpu

    run = bench_gpu.TuningStep(bench_gpu.TINY, trainable, torch.device("cpu"), False)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        run.forward_loss().backward()
    b, t = run.wave.shape[0], run.enc_cfg.num_frames
    mel_matmul = 2 * b * t * 257 * run.enc_cfg.num_mel_bins  # [B, T, 257] @ [257, F]
    assert counter.get_total_flops() == run.flops["total"] + mel_matmul
    # Everything frozen: the encoder costs its forward only.
    frozen = bench_gpu.step_flops(run.enc_cfg, b, 0, 0, 0, 0)
    assert frozen["encoder_backward"] == 0


def test_frozen_prefix_has_no_backward_in_the_formula():
    import bench_gpu
    from uamix_fairseq.modules.audiomae import EncoderConfig

    cfg = EncoderConfig()  # ViT-B/16, 1024 x 128: 512 patches + cls
    f6, f12 = (bench_gpu.step_flops(cfg, 64, k, 0, 0, 256) for k in (6, 12))
    l, d = 513, 768
    block = 2 * l * 12 * d * d + 4 * l * l * d
    assert f12["encoder_backward"] == 3 * 64 * 12 * 2 * block
    assert f6["encoder_backward"] * 2 == f12["encoder_backward"]
    assert f6["encoder_forward"] == f12["encoder_forward"]
    # Encoder FLOPs of top 6 / all 12: (12 + 2*6) / (12 + 2*12) = 2/3 (patch embed aside).
    enc = [f["encoder_forward"] + f["encoder_backward"] for f in (f6, f12)]
    assert enc[0] / enc[1] == pytest.approx(2 / 3, rel=1e-3)
