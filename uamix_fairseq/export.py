"""Export the tuned encoder of a fairseq checkpoint in the official AudioMAE layout,
for AudioMAE's own fine-tuning code, timm ports, or ``load_audiomae``:

    python -m uamix_fairseq.export CHECKPOINT.pt OUT.pth
"""

import argparse
import sys
from typing import Optional, Sequence

from .audiomae import CheckpointError, load_audiomae, save_audiomae


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uamix_fairseq.export",
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
    save_audiomae(encoder, args.out)
    print(f"wrote {args.out} ({encoder.depth} blocks x {encoder.embed_dim} dims, "
          f"{encoder.cfg.num_frames} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
