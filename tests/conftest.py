import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
# The main job's corpus and pipeline are an example (examples/demo/), not library code.
DEMO = os.path.join(REPO, "examples", "demo")
if DEMO not in sys.path:
    sys.path.insert(0, DEMO)

from uamix_fairseq.modules.audiomae import EncoderConfig  # noqa: E402

# Small enough for CPU tests, with every structural feature of ViT-B.
TINY = dict(embed_dim=64, depth=4, num_heads=2, num_frames=32, num_mel_bins=128)


@pytest.fixture
def tiny_cfg():
    return EncoderConfig(**TINY)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
