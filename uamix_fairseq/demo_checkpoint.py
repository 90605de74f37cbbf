"""Write a small, randomly initialised encoder as an official AudioMAE pretrained file.

Real AudioMAE weights cannot be downloaded on every machine, so the demo tunes this
one. It has AudioMAE's exact file layout (``model``/``optimizer``/``epoch``/``args``,
a 513-token positional table for 1024 frames, decoder entries to ignore), so the demo
exercises the same loading path as a real checkpoint:

    python -m uamix_fairseq.demo_checkpoint OUT.pth [--size small] [--depth 6]
"""

import argparse
import sys
from typing import Optional, Sequence

from .modules.audiomae import EncoderConfig, count_parameters, write_random_audiomae


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uamix_fairseq.demo_checkpoint",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", help="path of the .pth file to write")
    parser.add_argument("--embed-dim", type=int, default=192, help="width (default 192)")
    parser.add_argument("--depth", type=int, default=6, help="blocks (default 6)")
    parser.add_argument("--num-frames", type=int, default=1024,
                        help="frames of the positional table (default 1024, as AudioMAE)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    args = parser.parse_args(argv)
    if args.embed_dim % 64:
        print("error: --embed-dim must be a multiple of 64 (64-dim heads)", file=sys.stderr)
        return 2
    cfg = EncoderConfig(embed_dim=args.embed_dim, depth=args.depth,
                        num_heads=args.embed_dim // 64, num_frames=args.num_frames)
    encoder = write_random_audiomae(args.out, cfg, seed=args.seed)
    print(f"wrote {args.out}: AudioMAE-format encoder, {cfg.depth} blocks x "
          f"{cfg.embed_dim} dims, {count_parameters(encoder) / 1e6:.1f}M parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
