"""Export clip embeddings of an encoder for a manifest or a folder of audio.

    python -m uamix_fairseq.tools.export_embeddings --encoder ENC --manifest train.tsv --out emb.npz
    python -m uamix_fairseq.tools.export_embeddings --encoder ENC --audio-dir clips/ --out emb.npy

``ENC`` is anything ``load_audiomae`` reads: an official AudioMAE ``.pth``, a file written
by ``uamix_fairseq.tools.export``/``save_audiomae``, or a fairseq checkpoint of this plugin.

Outputs (chosen by the suffix of ``--out``):

* ``X.npy``: float32 embeddings ``[N, D]``, plus ``X.txt`` with the N file paths, one a
  line, in the same order;
* ``X.npz``: arrays ``embeddings`` ``[N, D]``, ``paths`` ``[N]`` (str) and, when a
  ``.label`` file lies beside the manifest, ``labels`` ``[N]`` (str; the label line as
  written, comma-separated for multi-label clips).

There is one data path: a folder is first described by a temporary manifest
(``make_manifests``: recursive, every format libsndfile reads, files sorted by relative
path, unreadable files skipped and reported), screened by decoding each file (silent,
truncated or too short files skipped and reported too: one rule), then embedded by
``uamix_fairseq.tools.embed`` exactly as the evaluation tools embed a manifest (crop from the
start or pad to ``--num-frames`` frames, by default the encoder's own length, as
``uamix-fewshot``/``uamix-probe`` do, ``--pad-mode`` zero or repeat; ``--windows N``
averages up to N consecutive crops; AudioMAE normalisation; the readout options
``--layer``, ``--final-norm``, ``--pool-real-patches`` and ``--pooling``).
"""

import argparse
import logging
import os
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch

from ..modules.audiomae import AudioMAEEncoder, load_audiomae
from .embed import (PAD_MODE_HELP, WINDOWS_HELP, EmbedConfig, cached_embeddings,
                    check_readout, embed_manifest)
from ..audio.features import NORM_STATS
from ..labels import label_path_for, read_labels
from ..manifest import ManifestError, make_manifests, read_manifest, write_manifest

__all__ = [
    "audio_extensions",
    "check_device",
    "embed_clips",
    "export_embeddings",
    "prepare_encoder",
    "main",
]

logger = logging.getLogger(__name__)
# How many skipped files of an --audio-dir a warning names.
MAX_NAMED_SKIPS = 10

# File extensions of the container formats libsndfile reads. RAW (header-less) and the
# Matlab formats are left out: a folder's .raw/.mat files are rarely audio.
_FORMAT_EXTENSIONS: Dict[str, Tuple[str, ...]] = {
    "WAV": ("wav",), "WAVEX": ("wav",), "FLAC": ("flac",), "OGG": ("ogg", "oga", "opus"),
    "MP3": ("mp3",), "AIFF": ("aif", "aiff", "aifc"), "AU": ("au", "snd"), "CAF": ("caf",),
    "W64": ("w64",), "RF64": ("rf64",), "SD2": ("sd2",), "VOC": ("voc",),
    "NIST": ("nist", "sph"), "IRCAM": ("sf", "ircam"), "PAF": ("paf",),
    "SVX": ("svx", "8svx", "iff"), "HTK": ("htk",), "SDS": ("sds",), "AVR": ("avr",),
    "XI": ("xi",), "PVF": ("pvf",), "WVE": ("wve",), "MPC2K": ("mpc",),
}


def audio_extensions() -> List[str]:
    """Extensions (no dot, sorted) of every format the installed libsndfile reads."""
    available = sf.available_formats()
    return sorted({ext for fmt, exts in _FORMAT_EXTENSIONS.items() if fmt in available
                   for ext in exts})


def check_device(device) -> torch.device:
    """``torch.device(device)``, refusing an accelerator that is not available."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {device!r} is not a torch device ({err}); use e.g. "
                         "cpu, cuda or cuda:1") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; "
                         "use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available; use --device cpu")
    return dev


def _load_encoder(encoder_path, num_frames: Optional[int]) -> AudioMAEEncoder:
    """Read the encoder (CheckpointError naming the file if it cannot be used)."""
    if num_frames is not None and (num_frames < 16 or num_frames % 16):
        raise ValueError(f"--num-frames {num_frames} must be a positive multiple of 16 "
                         "(the patch size)")
    return load_audiomae(encoder_path, num_frames=num_frames)


def prepare_encoder(encoder_path, num_frames: Optional[int] = None, norm: str = "audioset",
                    pooling: str = "mean", batch_size: int = 32, resample: bool = False,
                    device="cpu", layer: Optional[int] = None, final_norm: bool = True,
                    pool_real_patches: bool = False, pad_mode: str = "zero",
                    windows: int = 1
                    ) -> Tuple[AudioMAEEncoder, EmbedConfig, torch.device]:
    """Check the settings and read the encoder (``num_frames=None``: the file's own input
    length), so that a bad checkpoint or option fails before any audio is touched.
    ``layer``, ``final_norm``, ``pool_real_patches``, ``pad_mode``, ``windows``: as in
    ``EmbedConfig``."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if windows < 1:
        raise ValueError(f"--windows must be at least 1, got {windows}")
    if pad_mode not in ("zero", "repeat"):
        raise ValueError(f"--pad-mode must be zero or repeat, got {pad_mode!r}")
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    device = check_device(device)
    encoder = _load_encoder(encoder_path, num_frames)
    cfg = EmbedConfig(num_frames=encoder.cfg.num_frames, norm=norm, pooling=pooling,
                      batch_size=batch_size, resample=resample, layer=layer,
                      final_norm=bool(final_norm), pool_real_patches=bool(pool_real_patches),
                      pad_mode=pad_mode, windows=int(windows))
    cfg.frontend()  # checks the norm name
    check_readout(encoder, cfg, where=str(encoder_path))
    return encoder, cfg, device


def _embed_prepared(encoder, encoder_path, manifest_path, cfg: EmbedConfig, device,
                    cache_dir: Optional[str], progress: bool) -> np.ndarray:
    read_manifest(manifest_path)  # a bad manifest fails before the encoder moves
    if cache_dir:
        # The cache decides whether the encoder is needed; on a miss it reads the file
        # again (with the same num_frames, so the same weights).
        return cached_embeddings(encoder_path, manifest_path, cfg, cache_dir=cache_dir,
                                 device=device, progress=progress)
    return embed_manifest(encoder, manifest_path, cfg, device=device, progress=progress)


def embed_clips(encoder_path, manifest_path, num_frames: Optional[int] = None,
                norm: str = "audioset", pooling: str = "mean", batch_size: int = 32,
                resample: bool = False, device="cpu", cache_dir: Optional[str] = None,
                progress: bool = True, layer: Optional[int] = None,
                final_norm: bool = True, pool_real_patches: bool = False,
                pad_mode: str = "zero", windows: int = 1
                ) -> Tuple[np.ndarray, EmbedConfig]:
    """Embeddings ``[N, D]`` of the manifest's clips by the encoder file, in manifest
    order, through ``uamix_fairseq.tools.embed``; and the ``EmbedConfig`` used.

    ``num_frames=None`` takes the encoder file's own input length. The encoder is read
    first, so a bad checkpoint fails before any audio is decoded.
    """
    encoder, cfg, dev = prepare_encoder(encoder_path, num_frames, norm, pooling, batch_size,
                                        resample, device, layer, final_norm,
                                        pool_real_patches, pad_mode, windows)
    if cache_dir:
        encoder = None  # freed before the cache path reads the file again on a miss
    return _embed_prepared(encoder, encoder_path, manifest_path, cfg, dev, cache_dir,
                           progress), cfg


def _output_kind(out_path) -> str:
    suffix = os.path.splitext(str(out_path))[1].lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"--out {out_path}: the name must end in .npy (embeddings, plus a "
                         ".txt of paths beside it) or .npz (one archive)")
    return suffix[1:]


def _replace_atomically(path: str, write):
    """Call ``write(handle)`` on a temporary file, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _screen_folder_clips(manifest_path, out_manifest, audio_dir, cfg: EmbedConfig):
    """Decode every clip the folder's manifest lists with the checks embedding applies
    (silent, too short, NaN, truncated); write the good ones to ``out_manifest``.
    Returns the warnings naming the skipped files. Unreadable files were already
    skipped by ``make_manifests``: one rule for every bad file of a folder."""
    from ..audio.decode import AudioError, load_audio

    clips = read_manifest(manifest_path)
    good, bad = [], []
    for i in range(len(clips)):
        try:
            load_audio(clips.full_path(i), sample_rate=cfg.sample_rate, resample=cfg.resample)
            good.append((clips.paths[i], clips.sizes[i]))
        except AudioError as err:
            bad.append((clips.paths[i], str(err)))
    if not good:
        raise ManifestError(f"{audio_dir}: none of its {len(clips)} audio file(s) can be "
                            f"embedded (e.g. {bad[0][0]}: {bad[0][1]}); check the folder")
    write_manifest(out_manifest, clips.root, good)
    if not bad:
        return []
    shown = "; ".join(f"{path}: {reason}" for path, reason in bad[:MAX_NAMED_SKIPS])
    more = f"; and {len(bad) - MAX_NAMED_SKIPS} more" if len(bad) > MAX_NAMED_SKIPS else ""
    message = (f"skipped {len(bad)} file(s) under {audio_dir} that cannot be embedded "
               f"({shown}{more}); re-encode or delete them")
    logger.warning(message)
    return [message]


def export_embeddings(encoder_path, out_path, manifest: Optional[str] = None,
                      audio_dir: Optional[str] = None,
                      extensions: Optional[Sequence[str]] = None, **embed_kwargs) -> Dict:
    """Embed a manifest (``manifest``) or a folder (``audio_dir``) and write ``out_path``
    (``.npy`` + ``.txt``, or ``.npz``). ``embed_kwargs`` are :func:`embed_clips`'s
    keyword arguments (``num_frames``, ``norm``, ``pooling``, ``batch_size``,
    ``resample``, ``device``, ``cache_dir``, ``progress``, ``layer``, ``final_norm``,
    ``pool_real_patches``, ``pad_mode``, ``windows``).

    Returns a summary: ``out``, ``paths_file`` (``.npy`` only), ``num_clips``, ``dim``,
    ``num_frames``, ``labels`` (whether labels were written), ``warnings``.
    """
    if (manifest is None) == (audio_dir is None):
        raise ValueError("give exactly one of a manifest or an audio folder")
    kind = _output_kind(out_path)
    cache_dir = embed_kwargs.pop("cache_dir", None)
    progress = embed_kwargs.pop("progress", True)
    encoder, cfg, device = prepare_encoder(encoder_path, **embed_kwargs)
    if cache_dir:
        encoder = None  # freed before the cache path reads the file again on a miss
    warnings: List[str] = []
    with tempfile.TemporaryDirectory(prefix="uamix-embed-") as tmp:
        if audio_dir is not None:
            if not os.path.isdir(audio_dir):
                raise ManifestError(f"audio folder {audio_dir} does not exist; check --audio-dir")
            quiet = logging.getLogger(make_manifests.__module__)
            level = quiet.level
            quiet.setLevel(max(level, logging.WARNING))  # not "no valid manifest written"
            try:
                summary = make_manifests(audio_dir, tmp, valid_percent=0.0,
                                         extensions=tuple(extensions or audio_extensions()))
            finally:
                quiet.setLevel(level)
            other = {r: n for r, n in summary["sample_rates"].items() if r != 16000}
            if other and not cfg.resample:
                listed = ", ".join(f"{n} at {r} Hz" for r, n in sorted(other.items()))
                raise ValueError(f"{audio_dir}: {listed} file(s), the encoder needs 16000 "
                                 "Hz; pass --resample or resample them first")
            warnings = [w for w in summary["warnings"] if "no valid manifest" not in w]
            manifest_path = os.path.join(tmp, "screened.tsv")
            warnings += _screen_folder_clips(summary["train_manifest"], manifest_path,
                                             audio_dir, cfg)
        else:
            manifest_path = manifest
        clips = read_manifest(manifest_path)
        labels = None
        if manifest is not None and os.path.isfile(label_path_for(manifest)):
            labels = [",".join(names) for names in read_labels(manifest)]
        emb = _embed_prepared(encoder, encoder_path, manifest_path, cfg, device, cache_dir,
                              progress)
    paths = [clips.full_path(i) for i in range(len(clips))]
    assert emb.shape[0] == len(paths)

    result = {"out": str(out_path), "num_clips": int(emb.shape[0]), "dim": int(emb.shape[1]),
              "num_frames": cfg.num_frames, "labels": labels is not None,
              "warnings": warnings}
    if kind == "npy":
        paths_file = os.path.splitext(str(out_path))[0] + ".txt"
        _replace_atomically(str(out_path), lambda h: np.save(h, emb))
        text = "".join(p + "\n" for p in paths).encode("utf-8")
        _replace_atomically(paths_file, lambda h: h.write(text))
        result["paths_file"] = paths_file
    else:
        arrays = {"embeddings": emb, "paths": np.asarray(paths, dtype=str)}
        if labels is not None:
            arrays["labels"] = np.asarray(labels, dtype=str)
        _replace_atomically(str(out_path), lambda h: np.savez(h, **arrays))
    return result


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def add_embedding_arguments(parser: argparse.ArgumentParser):
    """The feature/encoder options shared by the embedding commands."""
    parser.add_argument("--num-frames", type=int, default=None,
                        help="fbank frames per clip (10 ms each; crop from the start or "
                        "zero-pad); a multiple of 16. Default: the encoder's own length "
                        "(1024 for AudioSet AudioMAE)")
    parser.add_argument("--norm", default="audioset", choices=sorted(NORM_STATS),
                        help="fbank normalisation statistics (default: audioset)")
    parser.add_argument("--pooling", default="mean", choices=("mean", "cls"),
                        help="clip embedding: mean of the patch tokens, or the cls token "
                        "(default: mean)")
    parser.add_argument("--layer", type=int, default=None, metavar="L",
                        help="read the tokens out of block L: 1-based, or negative from "
                        "the end (-1 = the last block), 0 = the patch embedding "
                        "(default: the last block)")
    parser.add_argument("--final-norm", choices=("on", "off"), default="on",
                        help="apply the encoder's final norm (default: on)")
    parser.add_argument("--no-final-norm", dest="final_norm", action="store_const",
                        const="off", help="the same as --final-norm off")
    parser.add_argument("--pool-real-patches", action="store_true",
                        help="mean pooling over the patches of real frames only (patches "
                        "that are all zero padding are left out; default: all patches)")
    parser.add_argument("--pad-mode", default="zero", choices=("zero", "repeat"),
                        help=PAD_MODE_HELP)
    parser.add_argument("--windows", type=int, default=1, metavar="N", help=WINDOWS_HELP)
    parser.add_argument("--batch-size", type=int, default=32,
                        help="clips per forward pass (default: 32)")
    parser.add_argument("--device", default="cpu",
                        help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument("--resample", action="store_true",
                        help="resample files that are not 16 kHz instead of refusing them")
    parser.add_argument("--cache-dir", default=None,
                        help="folder caching embeddings per (encoder file, manifest, "
                        "settings); off by default")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def embedding_kwargs(args) -> Dict:
    return dict(num_frames=args.num_frames, norm=args.norm, pooling=args.pooling,
                batch_size=args.batch_size, resample=args.resample, device=args.device,
                cache_dir=args.cache_dir, progress=not args.quiet,
                layer=getattr(args, "layer", None),
                final_norm=getattr(args, "final_norm", "on") == "on",
                pool_real_patches=getattr(args, "pool_real_patches", False),
                pad_mode=args.pad_mode, windows=args.windows)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uamix-embed",
        description="Clip embeddings [N, D] of an encoder for a manifest or a folder of "
        "audio, written as .npy (+ .txt of paths) or .npz (embeddings, paths, labels).")
    parser.add_argument("--encoder", required=True,
                        help="AudioMAE .pth, a file written by uamix_fairseq.tools.export, or a "
                        "fairseq checkpoint of this plugin")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="fairseq manifest (.tsv); a .label file beside "
                        "it is stored in .npz output")
    source.add_argument("--audio-dir", help="folder searched recursively for audio files")
    parser.add_argument("--out", required=True,
                        help="X.npy (writes X.npy and X.txt) or X.npz")
    parser.add_argument("--ext", default=None,
                        help="with --audio-dir: comma-separated extensions to include "
                        "(default: every format libsndfile reads)")
    add_embedding_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    extensions = None
    if args.ext:
        extensions = [e.strip().lstrip(".") for e in args.ext.split(",") if e.strip()]
    try:
        result = export_embeddings(args.encoder, args.out, manifest=args.manifest,
                                   audio_dir=args.audio_dir, extensions=extensions,
                                   **embedding_kwargs(args))
    except (ValueError, OSError) as err:  # the project's input errors are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    extra = f" and {result['paths_file']}" if "paths_file" in result else ""
    what = "embeddings, paths" + (", labels" if result["labels"] else "")
    print(f"wrote {result['out']}{extra}: {result['num_clips']} clips x {result['dim']} "
          f"dims ({what}; {result['num_frames']} frames per clip)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
