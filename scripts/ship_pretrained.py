#!/usr/bin/env python3
"""Turn an exported AudioMAE encoder into the repository's shipped checkpoint.

    python scripts/ship_pretrained.py ENCODER.pth pretrained/NAME.pth [--about FACTS.json]

Writes ``pretrained/NAME.pth`` (the encoder in the official AudioMAE layout, weights
stored as float16 to halve the file; ``load_audiomae`` returns a float32 encoder) and
``pretrained/NAME.json``: the encoder's shape, parameter count, the file's SHA-256 and
the mean-pooled embedding of a fixed reference clip (``reference_clip``), which
tests/test_pretrained.py recomputes from the shipped file. ``--about`` merges a JSON
object of provenance facts (data, command, updates, measured figures) into the record.
"""

import argparse
import hashlib
import json
import math
import os
import sys
from dataclasses import asdict
from typing import Optional, Sequence

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import uamix_fairseq as ux  # noqa: E402
from uamix_fairseq.audio.features import NORM_STATS  # noqa: E402
from uamix_fairseq.modules.audiomae import count_parameters  # noqa: E402

# AudioMAE's AudioSet normalisation, as the demo and the recipes use it.
FBANK_MEAN, FBANK_STD = NORM_STATS["audioset"]
REFERENCE_SECONDS = 1.28


def reference_clip(seconds: float = REFERENCE_SECONDS, rate: int = 16000) -> np.ndarray:
    """A fixed test signal: a linear chirp from 200 Hz to 4 kHz at amplitude 0.5 plus
    its third harmonic at amplitude 0.1, no randomness."""
    t = np.arange(int(round(seconds * rate)), dtype=np.float64) / rate
    phase = 2 * math.pi * (200.0 * t + 0.5 * (4000.0 - 200.0) / seconds * t ** 2)
    return (0.5 * np.sin(phase) + 0.1 * np.sin(3 * phase)).astype(np.float32)


def reference_embedding(encoder) -> np.ndarray:
    """Mean-pooled embedding of ``reference_clip`` through the public Python API."""
    fbank = ux.compute_fbank(torch.from_numpy(reference_clip()))
    x = ux.normalize_fbank(ux.pad_or_crop(fbank, encoder.cfg.num_frames), FBANK_MEAN, FBANK_STD)
    with torch.no_grad():
        return encoder.eval().embed(x[None, None]).squeeze(0).numpy()


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoder", help="an AudioMAE encoder file (uamix-export's output)")
    parser.add_argument("out", help="the shipped file to write, e.g. pretrained/NAME.pth")
    parser.add_argument("--about", default=None,
                        help="JSON file of provenance facts merged into the record")
    args = parser.parse_args(argv)
    if not args.out.endswith(".pth"):
        parser.error(f"the output name must end in .pth, got {args.out}")
    about = {}
    if args.about:
        with open(args.about, encoding="utf-8") as handle:
            about = json.load(handle)
        if not isinstance(about, dict):
            parser.error(f"{args.about} must hold a JSON object")
    encoder = ux.load_audiomae(args.encoder)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    ux.save_audiomae(encoder.half(), args.out)
    shipped = ux.load_audiomae(args.out)  # what users get: float32 from the float16 file
    record = {
        "file": os.path.basename(args.out),
        "sha256": sha256(args.out),
        "bytes": os.path.getsize(args.out),
        "parameters": count_parameters(shipped),
        "encoder_config": asdict(shipped.cfg),
        "reference_clip": {"seconds": REFERENCE_SECONDS,
                           "what": "scripts/ship_pretrained.py reference_clip(): chirp "
                                   "200 Hz -> 4 kHz, amplitude 0.5, + 0.1 third harmonic",
                           "fbank_mean": FBANK_MEAN, "fbank_std": FBANK_STD},
        "reference_embedding": [round(float(v), 6) for v in reference_embedding(shipped)],
        **about,
    }
    record_path = args.out[:-len(".pth")] + ".json"
    with open(record_path, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
        handle.write("\n")
    print(f"wrote {args.out} ({record['bytes'] / 1e6:.1f} MB, {record['parameters']:,} "
          f"parameters) and {record_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
