"""Command-line plumbing shared by ``fewshot`` and ``probe``: encoder and embedding
options, display names, embedding every clip once per encoder, and error handling."""

import argparse
import logging
import os
import sys
from typing import Callable, List, Optional, Sequence

import numpy as np

from . import EvaluationError
from ..tools.embed import PAD_MODE_HELP, WINDOWS_HELP

logger = logging.getLogger("uamix_fairseq.evaluation")


def add_encoder_args(parser: argparse.ArgumentParser):
    g = parser.add_argument_group("encoders and embeddings")
    g.add_argument("--encoder", action="append", required=True, metavar="FILE",
                   help="encoder to evaluate: an AudioMAE .pth or a fairseq checkpoint of "
                   "this plugin; repeat for several (differences are against the first)")
    g.add_argument("--name", action="append", default=None, metavar="NAME",
                   help="display name of each --encoder, in the same order (default: "
                   "the file name without extension)")
    g.add_argument("--num-frames", type=int, default=None,
                   help="fbank frames per clip (10 ms each), a multiple of 16; clips are "
                   "cropped from the start or zero-padded (default: each encoder's own "
                   "length, the frames of its positional table, as uamix-embed; the "
                   "baselines use the first encoder's)")
    g.add_argument("--norm", default="audioset",
                   help="fbank normalisation statistics: audioset, esc50 or "
                   "speechcommands (default: audioset)")
    g.add_argument("--pad-mode", default="zero", choices=["zero", "repeat"],
                   help=PAD_MODE_HELP)
    g.add_argument("--pooling", default="mean", choices=["mean", "cls"],
                   help="clip embedding: mean of the patch tokens, or the cls token "
                   "(default: mean)")
    g.add_argument("--layer", type=int, default=None, metavar="L",
                   help="read the tokens out of block L: 1-based, or negative from the "
                   "end (-1 = the last block), 0 = the patch embedding (default: the "
                   "last block)")
    g.add_argument("--final-norm", choices=["on", "off"], default="on",
                   help="apply the encoder's final norm (norm to the tokens, or fc_norm "
                   "to the pooled vector of fine-tuned files) (default: on)")
    g.add_argument("--no-final-norm", dest="final_norm", action="store_const",
                   const="off", help="the same as --final-norm off")
    g.add_argument("--pool-real-patches", action="store_true",
                   help="mean pooling over the patches of real frames only: patches "
                   "whose frames are all zero padding are left out (a partly real patch "
                   "counts as real) (default: all patches)")
    g.add_argument("--windows", type=int, default=1, metavar="N",
                   help=WINDOWS_HELP + "; the --baseline features are averaged the same way")
    g.add_argument("--readout", action="append", default=None, metavar="SPEC",
                   help="per-encoder readout, one per --encoder in the same order (like "
                   "--name): comma-separated layer=L, pooling=mean|cls, final_norm=on|off, "
                   "real_patches=on|off, windows=N; keys left out (or SPEC 'default') take "
                   "the --layer/--pooling/--final-norm/--pool-real-patches/--windows "
                   "values. Give the same file twice to compare two readouts of it on the "
                   "same episodes")
    g.add_argument("--baseline", action="append", default=None, choices=["fbank_stats"],
                   help="also score a no-learning baseline on the same clips and "
                   "episodes (repeatable). fbank_stats: mean and standard deviation over "
                   "time of the normalised fbank per mel bin (2 x 128 numbers), over the "
                   "real frames of the same crop the encoders see; reported as "
                   "'fbank-stats'")
    g.add_argument("--reference", default=None, metavar="NAME",
                   help="the row paired differences are taken against: an encoder name "
                   "or a baseline's report name, e.g. fbank-stats (default: the first "
                   "--encoder)")
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


READOUT_KEYS = ("layer", "pooling", "final_norm", "real_patches", "windows")
_ON_OFF = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False,
           "yes": True, "no": False}


def parse_readout(spec: Optional[str], base):
    """``base`` (an ``EmbedConfig``) with the readout ``spec`` applied (see --readout)."""
    import dataclasses

    if spec is None or spec.strip() in ("", "default", "-"):
        return base
    changes = {}
    for item in spec.split(","):
        key, sep, value = item.strip().partition("=")
        key, value = key.strip().replace("-", "_"), value.strip().lower()
        if key == "pool_real_patches":
            key = "real_patches"
        if not sep or key not in READOUT_KEYS:
            raise EvaluationError(f"--readout {spec!r}: {item.strip()!r} is not KEY=VALUE "
                                  f"with KEY one of {', '.join(READOUT_KEYS)}")
        if key == "layer":
            try:
                changes["layer"] = int(value)
            except ValueError:
                raise EvaluationError(f"--readout {spec!r}: layer must be an integer, got "
                                      f"{value!r}") from None
        elif key == "windows":
            if not value.isdigit() or int(value) < 1:
                raise EvaluationError(f"--readout {spec!r}: windows must be a whole number "
                                      f"of at least 1, got {value!r}")
            changes["windows"] = int(value)
        elif key == "pooling":
            if value not in ("mean", "cls"):
                raise EvaluationError(f"--readout {spec!r}: pooling must be mean or cls")
            changes["pooling"] = value
        else:
            if value not in _ON_OFF:
                raise EvaluationError(f"--readout {spec!r}: {key} must be on or off")
            changes["final_norm" if key == "final_norm" else "pool_real_patches"] = \
                _ON_OFF[value]
    return dataclasses.replace(base, **changes)


def readout_specs(args, paths: Sequence[str]) -> List[Optional[str]]:
    specs = getattr(args, "readout", None)
    if not specs:
        return [None] * len(paths)
    if len(specs) != len(paths):
        raise EvaluationError(
            f"{len(specs)} --readout value(s) for {len(paths)} --encoder file(s); give one "
            "per encoder, in the same order ('default' for the global readout), or none")
    return list(specs)


def encoder_names(paths: Sequence[str], names: Optional[Sequence[str]],
                  specs: Optional[Sequence[Optional[str]]] = None) -> List[str]:
    """Display names: ``--name`` values, or file stems (with ``@SPEC`` for a non-default
    ``--readout``) made unique with #2, #3, ..."""
    if names:
        if len(names) != len(paths):
            raise EvaluationError(
                f"{len(names)} --name value(s) for {len(paths)} --encoder file(s); give "
                "one name per encoder, in the same order, or none")
        if len(set(names)) != len(names):
            raise EvaluationError(f"--name values must differ, got {list(names)}")
        return list(names)
    specs = list(specs) if specs else [None] * len(paths)
    out = []
    for p, spec in zip(paths, specs):
        stem = os.path.splitext(os.path.basename(p))[0] or p
        if spec and spec.strip() not in ("default", "-"):
            stem = f"{stem}@{spec.strip()}"
        name, i = stem, 1
        while name in out:
            i += 1
            name = f"{stem}#{i}"
        out.append(name)
    return out


def embed_config(args, num_frames: Optional[int] = None):
    """The ``EmbedConfig`` of the global options (``num_frames``: when --num-frames is
    not given, the length to use; 1024 as a placeholder otherwise)."""
    from ..tools.embed import EmbedConfig

    frames = args.num_frames if args.num_frames is not None else (num_frames or 1024)
    cfg = EmbedConfig(num_frames=frames, norm=args.norm, pooling=args.pooling,
                      batch_size=args.batch_size, resample=args.resample,
                      layer=getattr(args, "layer", None),
                      final_norm=getattr(args, "final_norm", "on") == "on",
                      pool_real_patches=getattr(args, "pool_real_patches", False),
                      pad_mode=getattr(args, "pad_mode", "zero"),
                      windows=getattr(args, "windows", 1))
    if cfg.windows < 1:
        raise EvaluationError(f"--windows must be at least 1, got {cfg.windows}")
    cfg.frontend()  # checks --norm
    if frames < 16 or frames % 16 or args.batch_size < 1:
        raise EvaluationError("--num-frames must be a positive multiple of 16 (the patch "
                              f"size), got {frames}, and --batch-size at least 1")
    return cfg


def encoder_configs(args, paths: Sequence[str]) -> list:
    """One ``EmbedConfig`` per encoder: its readout (``--readout`` or the global flags)
    and its input length (--num-frames, or the file's own length). Reads every file
    once, so a wrong file or readout stops the run before any embedding."""
    import dataclasses

    from ..modules.audiomae import load_audiomae

    specs = readout_specs(args, paths)
    base = embed_config(args)
    shapes: dict = {}  # real path -> (input frames, depth); encoders are not kept
    out = []
    for path, spec in zip(paths, specs):
        real = os.path.realpath(path)
        if real not in shapes:
            enc = load_audiomae(path, num_frames=args.num_frames)
            shapes[real] = (enc.cfg.num_frames, enc.depth)
            del enc
        frames, depth = shapes[real]
        cfg = dataclasses.replace(parse_readout(spec, base), num_frames=frames)
        if cfg.layer is not None and not -depth <= cfg.layer <= depth:
            raise EvaluationError(
                f"{path}: layer {cfg.layer} outside [-{depth}, {depth}]: the encoder has "
                f"{depth} blocks (1-based, or negative from the end; 0 = the patch "
                "embedding)")
        out.append(cfg)
    if hasattr(args, "attack_eps_db") and attack_config(args):
        from .robust import check_first_crop

        check_first_crop(out)  # before any clip is embedded
    return out


def check_encoders(paths: Sequence[str], cfg) -> None:
    """Load every encoder once before any embedding, so that a wrong file stops the
    run at once (``CheckpointError`` names the file) rather than after the first
    encoder's embeddings."""
    from ..tools.embed import load_encoder

    seen = set()
    for p in paths:
        if os.path.realpath(p) not in seen:
            seen.add(os.path.realpath(p))
            load_encoder(p, cfg)


def baseline_entries(args, encoder_cfgs) -> List[tuple]:
    """``(baseline key, report name, EmbedConfig)`` for every --baseline: the fbank
    crop of --num-frames, or of the first encoder's length."""
    import dataclasses

    from .baselines import baseline_display_name

    keys = list(dict.fromkeys(getattr(args, "baseline", None) or []))
    if not keys:
        return []
    cfg = dataclasses.replace(embed_config(args, encoder_cfgs[0].num_frames),
                              layer=None, pooling="mean", final_norm=True,
                              pool_real_patches=False)
    return [(k, baseline_display_name(k), cfg) for k in keys]


def check_row_names(encoder_names_: Sequence[str], baselines: Sequence[tuple],
                    reference: Optional[str]) -> str:
    """All report rows must have distinct names; returns the reference row's name."""
    rows = list(encoder_names_) + [b[1] for b in baselines]
    clash = sorted({n for n in rows if rows.count(n) > 1})
    if clash:
        raise EvaluationError(f"report names must differ; {clash} is used twice (rename "
                              "the encoder with --name)")
    if reference is None:
        return rows[0]
    if reference not in rows:
        raise EvaluationError(f"--reference {reference!r} is not a row of the report; "
                              f"choose one of {rows}")
    return reference


def _entry_key(path, cfg):
    from dataclasses import asdict

    return os.path.realpath(path), repr(sorted(asdict(cfg).items()))


def embed_all(paths: Sequence[str], names: Sequence[str], manifest: str, cfg, args,
              expected_rows: int) -> List[np.ndarray]:
    """Embeddings ``[N, D]`` of every clip of ``manifest``, once per encoder (``cfg``:
    one ``EmbedConfig`` for all, or one per encoder)."""
    from ..tools.embed import cached_embeddings

    cfgs = list(cfg) if isinstance(cfg, (list, tuple)) else [cfg] * len(paths)
    out, done = [], {}
    for path, name, c in zip(paths, names, cfgs):
        key = _entry_key(path, c)
        if key in done:  # the same file and readout twice (a sanity check): embed once
            out.append(done[key])
            continue
        logger.info("embedding %d clips of %s with %s (%s)", expected_rows, manifest,
                    name, path)
        emb = cached_embeddings(path, manifest, c, cache_dir=args.cache_dir,
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


def embed_baselines(baselines: Sequence[tuple], manifest: str, args,
                    expected_rows: int) -> List[np.ndarray]:
    """Features ``[N, D]`` of every clip of ``manifest``, once per baseline."""
    from ..tools.embed import cached_baseline

    out = []
    for key, name, cfg in baselines:
        logger.info("computing %s for %d clips of %s", name, expected_rows, manifest)
        feats = cached_baseline(key, manifest, cfg, cache_dir=args.cache_dir,
                                device=args.device, progress=not args.no_progress)
        if feats.shape[0] != expected_rows:
            raise EvaluationError(f"{name}: {feats.shape[0]} rows for the "
                                  f"{expected_rows} clips of {manifest}")
        out.append(feats)
    return out


def diagnose(names: Sequence[str], matrices: Sequence[np.ndarray], durations) -> dict:
    """The padding diagnostic of every row name (see ``diagnostics``)."""
    from .diagnostics import pc1_diagnostic

    return {n: pc1_diagnostic(m, durations) for n, m in zip(names, matrices)}


def entries_for_report(names, paths, cfgs, baselines) -> List[dict]:
    out = [{"name": n, "path": os.path.abspath(p), "num_frames": c.num_frames,
            "readout": c.readout_spec()} for n, p, c in zip(names, paths, cfgs)]
    out += [{"name": name, "baseline": key, "num_frames": cfg.num_frames}
            for key, name, cfg in baselines]
    return out


def print_warnings(caught) -> None:
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)


def user_errors():
    from ..audio.decode import AudioError
    from ..modules.audiomae import CheckpointError
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


def write_report(results, names: Sequence[str], entries: Sequence[dict], args, stem: str,
                 settings, title: str, attack, attacked: str, plot: bool,
                 diagnostics: Optional[dict] = None, diagnostics_where: str = "",
                 reference: Optional[str] = None) -> int:
    """The common end of ``uamix-fewshot`` and ``uamix-probe``: name the encoders (and
    baselines) and the attack in the report, print the table and the padding
    diagnostic and write the files under ``args.out``. ``entries``: one dict per row
    name (``entries_for_report``)."""
    from .report import print_and_write

    if attack:
        title += f"\nattack on the {attacked}: {attack.describe()}"
    written = print_and_write(results, names, args.out, stem, settings, list(entries),
                              title=title, plot=plot, diagnostics=diagnostics,
                              diagnostics_where=diagnostics_where, reference=reference)
    print("wrote " + ", ".join(written.values()), file=sys.stderr)
    return 0
