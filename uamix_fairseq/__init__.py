"""uamix-fairseq: uaMix-MAE contrastive tuning of AudioMAE encoders, as a fairseq plugin.

Plain-PyTorch API (no fairseq needed to use these):

    compute_fbank, pad_or_crop, normalize_fbank   -- AudioMAE's Kaldi fbank features
    load_audiomae, save_audiomae, AudioMAEEncoder -- the encoder and its files
    t_cutmix, tf_cutmix, mixup                    -- input mixing of [B, 1, T, F] batches
    NNCLRHead, SupportQueue, nnclr_loss, soft_target_loss
    load_audio, read_manifest

Importing the package also registers the fairseq components (task
``uamix_contrastive``, model ``uamix_audiomae``, criterion ``uamix_nnclr``, optimizer
``uamix_adamw``) when fairseq is installed; ``--user-dir`` points at this folder.
"""

import importlib
import importlib.util

from .audio.features import compute_fbank, normalize_fbank, pad_or_crop
from .modules.audiomae import AudioMAEEncoder, CheckpointError, load_audiomae, save_audiomae
from .modules.mixing import mixup, t_cutmix, tf_cutmix
from .modules.nnclr import NNCLRHead, SupportQueue, nnclr_loss, soft_target_loss

__version__ = "0.1.0"

# These need numpy and soundfile: imported on first use, so that the encoder, head,
# views, mixing and fbank work where only torch is installed (benchmarks/bench_gpu.py
# on a bare GPU machine).
_LAZY = {"AudioError": "audio.decode", "load_audio": "audio.decode",
         "ManifestError": "manifest", "read_manifest": "manifest"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _fairseq_installed() -> bool:
    try:
        return importlib.util.find_spec("fairseq") is not None
    except (ImportError, ValueError):  # an import blocker, or a half-removed install
        return False


if _fairseq_installed():
    # fairseq's --user-dir imports only tasks/ and models/ by itself.
    from . import criterions, models, optim, tasks  # noqa: F401
