"""Command-line plumbing shared by ``fewshot`` and ``probe``: encoder and embedding
options, display names, embedding every clip once per encoder, and error handling."""

import argparse
import logging
import os
import sys
from typing import Callable, List, Optional, Sequence

import numpy as np

from . import EvaluationError

logger = logging.getLogger("uamix_fairseq.evaluation")


def add_encoder_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("encoders and embeddings")
    g.add_argument("--encoder", action="append", required=True, metavar="FILE",
                   help="encoder to evaluate: an AudioMAE .pth or a fairseq checkpoint of "
                   "this plugin; repeat for several (differences are against the first)")
    g.add_argument("--name", action="append", default=None, metavar="NAME",
                   help="display name of each --encoder, in the same order (default: "
                   "the file name without extension)")
    g.add_argument("--num-frames", type=int, default=1024,
                   help="fbank frames per clip (10 ms each); clips are cropped from the "
                   "start or zero-padded (default: 1024)")
    g.add_argument("--norm", default="audioset",
                   help="fbank normalisation statistics: audioset, esc50 or "
                   "speechcommands (default: audioset)")
    g.add_argument("--pooling", default="mean", choices=["mean", "cls"],
                   help="clip embedding: mean of the patch tokens, or the cls token "
                   "(default: mean)")
    g.add_argument("--batch-size", type=int, default=32,
                   help="clips per encoder forward pass (default: 32)")
    g.add_argument("--resample", action="store_true",
                   help="resample audio at other rates to 16 kHz instead of refusing it")
    g.add_argument("--device", default="cpu", help="torch device for the encoder "
                   "(default: cpu)")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="cache of clip embeddings, keyed by encoder file, manifest and "
                   "feature settings (default: no cache)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--logreg-c", type=float, default=1.0,
                   help="inverse L2 strength C of logistic regression: minimise "
                   "0.5*||W||^2 + C*sum(cross-entropy) on standardised features "
                   "(scikit-learn's convention; default: 1.0)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the JSON, CSV (and PNG) results (created)")


def add_attack_args(parser: argparse.ArgumentParser, attacked: str):
    """Robustness options; ``attacked`` names the clips that are perturbed."""
    g = parser.add_argument_group(
        "robustness (attacks)",
        f"Perturb the {attacked}; every other clip stays clean. Robust accuracy is "
        "reported beside the clean one, on the same episodes/clips. Noise comes first "
        "(waveform), then PGD (normalised fbank). Cost: PGD costs each attacked clip "
        "--attack-steps forward+backward passes plus one forward pass per crafting "
        "encoder, about 3*steps+1 times embedding it; the clean embeddings are cached "
        "as usual, the attacked ones are not.")
    g.add_argument("--attack-eps-db", type=float, default=None, metavar="DB",
                   help="white-box L-inf PGD budget on every fbank bin, in dB of mel-band "
                   "power (1 dB = 0.025 in AudioSet-normalised units); 0 keeps the "
                   "inputs clean (a check: robust = clean) (default: no PGD)")
    g.add_argument("--attack-steps", type=int, default=10,
                   help="PGD steps (default: 10)")
    g.add_argument("--attack-step-size-db", type=float, default=None, metavar="DB",
                   help="PGD step in dB (default: 2.5 * eps / steps)")
    g.add_argument("--attack-no-random-start", action="store_true",
                   help="start PGD at the clean input instead of a uniform random point "
                   "of the budget ball")
    g.add_argument("--attack-snr-db", type=float, default=None, metavar="DB",
                   help="add white Gaussian noise at this signal-to-noise ratio to the "
                   "waveform (before PGD if both are given) (default: no noise)")
    g.add_argument("--attack-source", default=None, metavar="FILE",
                   help="transfer (black-box) attack: craft PGD on this second encoder, "
                   "with its own surrogate classifier on its own clean embeddings, and "
                   "score the perturbed clips with every --encoder (which give no "
                   "gradient); costs the source's attack once for all encoders")
    g.add_argument("--attack-seed", type=int, default=0,
                   help="seed of the noise (per clip) and of the PGD random start (per "
                   "batch of --attack-batch-size clips) (default: 0)")
    g.add_argument("--attack-temperature", type=float, default=0.1,
                   help="[R] temperature of the cosine class-mean surrogate loss "
                   "(default: 0.1)")
    g.add_argument("--attack-batch-size", type=int, default=8,
                   help="clips per PGD batch; PGD keeps the activations for the "
                   "backward pass (default: 8)")


def attack_config(args):
    """The ``AttackConfig`` of the command line, or None without attack options."""
    from .robust import AttackConfig

    attack = AttackConfig(
        eps_db=args.attack_eps_db, steps=args.attack_steps,
        step_size_db=args.attack_step_size_db, random_start=not args.attack_no_random_start,
        snr_db=args.attack_snr_db, source=args.attack_source, seed=args.attack_seed,
        temperature=args.attack_temperature, batch_size=args.attack_batch_size)
    return attack if attack.enabled else None


def encoder_names(paths: Sequence[str], names: Optional[Sequence[str]]) -> List[str]:
    """Display names: ``--name`` values, or file stems made unique with #2, #3, ..."""
    if names:
        if len(names) != len(paths):
            raise EvaluationError(
                f"{len(names)} --name value(s) for {len(paths)} --encoder file(s); give "
                "one name per encoder, in the same order, or none")
        if len(set(names)) != len(names):
            raise EvaluationError(f"--name values must differ, got {list(names)}")
        return list(names)
    out = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0] or p
        name, i = stem, 1
        while name in out:
            i += 1
            name = f"{stem}#{i}"
        out.append(name)
    return out


def embed_config(args):
    from ..embed import EmbedConfig

    cfg = EmbedConfig(num_frames=args.num_frames, norm=args.norm, pooling=args.pooling,
                      batch_size=args.batch_size, resample=args.resample)
    cfg.frontend()  # checks --norm
    if args.num_frames < 16 or args.batch_size < 1:
        raise EvaluationError("--num-frames must be at least 16 (one patch) and "
                              "--batch-size at least 1")
    return cfg


def check_encoders(paths: Sequence[str], cfg) -> None:
    """Load every encoder once before any embedding, so that a wrong file stops the
    run at once (``CheckpointError`` names the file) rather than after the first
    encoder's embeddings."""
    from ..embed import load_encoder

    seen = set()
    for p in paths:
        if os.path.realpath(p) not in seen:
            seen.add(os.path.realpath(p))
            load_encoder(p, cfg)


def embed_all(paths: Sequence[str], names: Sequence[str], manifest: str, cfg, args,
              expected_rows: int) -> List[np.ndarray]:
    """Embeddings ``[N, D]`` of every clip of ``manifest``, once per encoder."""
    from ..embed import cached_embeddings

    out, done = [], {}
    for path, name in zip(paths, names):
        key = os.path.realpath(path)
        if key in done:  # the same file twice (e.g. a sanity check): embed it once
            out.append(done[key])
            continue
        logger.info("embedding %d clips of %s with %s (%s)", expected_rows, manifest,
                    name, path)
        emb = cached_embeddings(path, manifest, cfg, cache_dir=args.cache_dir,
                                device=args.device, progress=not args.no_progress)
        if emb.shape[0] != expected_rows:
            raise EvaluationError(f"{path}: {emb.shape[0]} embeddings for the "
                                  f"{expected_rows} clips of {manifest}")
        if not np.isfinite(emb).all():
            raise EvaluationError(f"{path}: the embeddings of {manifest} contain NaN or "
                                  "inf; the encoder or the audio is broken")
        done[key] = emb
        out.append(emb)
    return out


def print_warnings(caught) -> None:
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)


def user_errors():
    from ..audio import AudioError
    from ..audiomae import CheckpointError
    from ..labels import LabelError
    from ..manifest import ManifestError

    return (EvaluationError, LabelError, ManifestError, CheckpointError, AudioError)


def cli_main(run: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
             argv=None) -> int:
    """Parse, set up logging, run; bad input ends with ``error: ...`` and exit code 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return run(args)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def write_report(results, names: Sequence[str], paths: Sequence[str], args, stem: str,
                 settings, title: str, attack, attacked: str, plot: bool) -> int:
    """The common end of ``uamix-fewshot`` and ``uamix-probe``: name the encoders and the
    attack in the report, print the table and write the files under ``args.out``."""
    from .report import print_and_write

    encoders = [{"name": n, "path": os.path.abspath(p)} for n, p in zip(names, paths)]
    if attack:
        title += f"\nattack on the {attacked}: {attack.describe()}"
    written = print_and_write(results, names, args.out, stem, settings, encoders,
                              title=title, plot=plot)
    print("wrote " + ", ".join(written.values()), file=sys.stderr)
    return 0

