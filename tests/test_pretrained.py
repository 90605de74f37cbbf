"""The AudioMAE shipped in pretrained/: intact, loadable, and the same network that was
recorded (its embedding of a fixed clip, computed here from the formula of the clip)."""

import hashlib
import json
import math
import os

import numpy as np
import torch

import uamix_fairseq as ux
from uamix_fairseq.modules.audiomae import read_checkpoint_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "pretrained", "audiomae_6x192_permissive.pth")
RECORD = SHIPPED[:-len(".pth")] + ".json"


def _record():
    with open(RECORD, encoding="utf-8") as handle:
        return json.load(handle)


def _chirp(seconds, rate=16000):
    # 200 Hz -> 4 kHz linear chirp, amplitude 0.5, plus its third harmonic at 0.1.
    t = np.arange(int(round(seconds * rate))) / rate
    phase = 2 * math.pi * (200 * t + 1900 / seconds * t ** 2)
    return (0.5 * np.sin(phase) + 0.1 * np.sin(3 * phase)).astype(np.float32)


def test_file_is_the_recorded_one():
    record = _record()
    assert os.path.getsize(SHIPPED) == record["bytes"]
    digest = hashlib.sha256(open(SHIPPED, "rb").read()).hexdigest()
    assert digest == record["sha256"], "pretrained/ file differs from its record"
    state = read_checkpoint_file(SHIPPED)["model"]
    assert {v.dtype for v in state.values()} == {torch.float16}


def test_loads_with_load_audiomae_and_matches_its_recorded_embedding():
    record = _record()
    encoder = ux.load_audiomae(SHIPPED).eval()
    assert next(encoder.parameters()).dtype == torch.float32
    cfg = record["encoder_config"]
    assert (encoder.cfg.embed_dim, encoder.cfg.depth, encoder.cfg.num_heads,
            encoder.cfg.num_frames) == (cfg["embed_dim"], cfg["depth"], cfg["num_heads"],
                                        cfg["num_frames"]) == (192, 6, 3, 128)
    assert sum(p.numel() for p in encoder.parameters()) == record["parameters"]
    clip = record["reference_clip"]
    fbank = ux.compute_fbank(torch.from_numpy(_chirp(clip["seconds"])))
    x = ux.normalize_fbank(ux.pad_or_crop(fbank, cfg["num_frames"]), clip["fbank_mean"],
                           clip["fbank_std"])
    with torch.no_grad():
        emb = encoder.embed(x[None, None])[0].numpy()
    expected = np.array(record["reference_embedding"])
    assert emb.shape == expected.shape == (192,)
    np.testing.assert_allclose(emb, expected, atol=2e-4, rtol=0)
    # A different clip gives a different embedding (the check is not vacuous).
    with torch.no_grad():
        other = encoder.embed(torch.zeros_like(x)[None, None])[0].numpy()
    assert np.abs(other - expected).max() > 1e-2


def test_record_states_its_provenance():
    record = _record()
    for key in ("data", "licences", "command", "updates", "fewshot"):
        assert record.get(key), f"{RECORD} lacks {key!r}"
