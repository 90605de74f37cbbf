"""Export the encoder (and, for MAE pretraining checkpoints, the decoder) of a fairseq
checkpoint in the official AudioMAE layout,
for AudioMAE's own fine-tuning code, timm ports, or ``load_audiomae``:

    python -m uamix_fairseq.tools.export CHECKPOINT.pt OUT.pth
"""

import argparse
import sys
from typing import Optional, Sequence

from ..modules.audiomae import CheckpointError, read_checkpoint_file, load_audiomae, save_audiomae


def decoder_entries(path) -> dict:
    """The MAE decoder of a checkpoint of this plugin's `uamix_audiomae_mae` or
    `uamix_audiomae_joint` model (kept under ``decoder.``), with official key names;
    {} when there is none."""
    obj = read_checkpoint_file(path)
    state = obj.get("model", obj) if isinstance(obj.get("model", obj), dict) else obj
    return {k[len("decoder."):]: v for k, v in state.items()
            if k.startswith("decoder.") and hasattr(v, "shape")}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uamix_fairseq.tools.export",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="fairseq checkpoint written by this plugin "
                        "(or any file load_audiomae reads)")
    parser.add_argument("out", help="AudioMAE-layout .pth to write")
    args = parser.parse_args(argv)
    try:
        encoder = load_audiomae(args.checkpoint)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    decoder = decoder_entries(args.checkpoint)
    save_audiomae(encoder, args.out, decoder_state=decoder)
    print(f"wrote {args.out} ({encoder.depth} blocks x {encoder.embed_dim} dims, "
          f"{encoder.cfg.num_frames} frames" + (f", MAE decoder: {len(decoder)} entries"
                                                if decoder else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
