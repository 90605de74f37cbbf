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

import importlib.util

from .audio import AudioError, load_audio
from .audiomae import AudioMAEEncoder, CheckpointError, load_audiomae, save_audiomae
from .features import compute_fbank, normalize_fbank, pad_or_crop
from .manifest import ManifestError, read_manifest
from .mixing import mixup, t_cutmix, tf_cutmix
from .nnclr import NNCLRHead, SupportQueue, nnclr_loss, soft_target_loss

__version__ = "0.1.0"

if importlib.util.find_spec("fairseq") is not None:
    # fairseq's --user-dir imports only tasks/ and models/ by itself.
    from . import criterions, models, optim, tasks  # noqa: F401
