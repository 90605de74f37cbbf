"""benchmarks/cuda_checks.py: the GPU correctness checks run here on CPU (and on CUDA
where there is one), so that gpu_check.sh cannot rot; and they do fail on a wrong path."""

import json
import os
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import cuda_checks  # noqa: E402
from uamix_fairseq.modules.audiomae import EncoderConfig  # noqa: E402

SMALL = EncoderConfig(embed_dim=192, depth=4, num_heads=3, num_frames=128)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_checks_pass(device):
    assert cuda_checks.fbank_matches_cpu(device)["max_abs_diff"] <= 1e-3
    cfg = None if device == "cuda" else SMALL
    assert cuda_checks.bf16_encoder_close_to_fp32(device, cfg)["min_cosine"] >= 0.99
    assert cuda_checks.frozen_prefix_keeps_no_graph(device)["frozen_parameters"] > 0


def test_checks_catch_a_wrong_path(monkeypatch):
    real = cuda_checks.compute_fbank
    # Shift only the second call (the "device" result), not the CPU reference.
    calls = []

    def shifted(w):
        calls.append(1)
        return real(w) + (0.01 if len(calls) == 2 else 0.0)

    monkeypatch.setattr(cuda_checks, "compute_fbank", shifted)
    with pytest.raises(AssertionError, match="differs from CPU by 0.01"):
        cuda_checks.fbank_matches_cpu("cpu")

    # A "frozen" prefix that still builds a graph (trainable_blocks ignored).
    enc_forward = cuda_checks.AudioMAEEncoder.forward
    monkeypatch.setattr(cuda_checks.AudioMAEEncoder, "forward",
                        lambda self, x, trainable_blocks=None: enc_forward(self, x))
    with pytest.raises(AssertionError, match="frozen parameters got gradients"):
        cuda_checks.frozen_prefix_keeps_no_graph("cpu")


def test_gpu_check_script_runs_its_stages_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh with GPU_CHECK_DEVICE=cpu: same stages, tiny shapes."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, GPU_CHECK_DEVICE="cpu", OMP_NUM_THREADS="1",
               PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(repo, "benchmarks", "gpu_check.sh"),
                           str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 of 3 checks passed on cpu" in proc.stdout
    with open(tmp_path / "bench_gpu.json") as f:
        res = json.load(f)
    assert res["step_time_partial_s"] > 0 and res["step_time_full_s"] > 0
    assert res["fbank_clips_per_s_device"] > 0 and "mfu" in res


def test_gpu_check_script_refuses_a_machine_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(["bash", os.path.join(repo, "benchmarks", "gpu_check.sh"),
                           str(tmp_path)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable), timeout=120)
    assert proc.returncode != 0
    assert "torch sees no CUDA device" in proc.stdout + proc.stderr
