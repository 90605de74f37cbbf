"""``python -m uamix_fairseq.prepare DATASET SRC DEST [options]``: one sub-command per
dataset; prints the summary as JSON on stdout, log lines and errors on stderr."""

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

from . import audioset, esc50, folder, speechcommands, voxceleb1
from ..labels import LabelError
from ..manifest import ManifestError

CONVERTERS = (folder, esc50, speechcommands, voxceleb1, audioset)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m uamix_fairseq.prepare",
        description="Convert a downstream dataset, as distributed, into fairseq manifests "
                    "(<split>.tsv: root line, then relative/path<TAB>num_samples) and labels "
                    "(<split>.label: one line per clip, classes comma-separated). Audio is "
                    "not copied or resampled; sizes are frames at each file's own rate. "
                    "Prints a JSON summary.",
    )
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for module in CONVERTERS:
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__.replace("``", ""),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("src", metavar="SRC", help="the dataset folder as distributed")
        p.add_argument("dest", metavar="DEST",
                       help="folder for the manifests and labels (created if missing)")
        module.add_arguments(p)
        p.add_argument("--quiet", action="store_true", help="log warnings only")
        p.set_defaults(run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = args.run(args)
    except (ManifestError, LabelError, OSError) as err:  # PrepareError is a ManifestError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
