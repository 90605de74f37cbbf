"""A fairseq dataset of audio clips listed in a manifest.

One data path for every task: manifest -> waveform (decoded, mono, checked) -> crop ->
batch of waveforms with their lengths. Features and views are computed later, on the
batch and on the training device (see ``uamix_fairseq.features.batch_fbank``).
"""

import logging

import numpy as np
import torch
from fairseq.data import FairseqDataset

from ..audio import AudioError, load_audio
from ..manifest import read_manifest

logger = logging.getLogger(__name__)


class AudioClipDataset(FairseqDataset):
    """Clips of a fairseq audio manifest, cropped to at most ``max_samples``.

    Training crops start at a random offset drawn from ``(seed, epoch, index)``, so a
    resumed run sees the same crops; evaluation crops start at 0 (as AudioMAE does).
    With ``skip_bad_audio`` an unreadable or invalid clip is dropped from its batch,
    counted and logged instead of stopping the run.
    """

    def __init__(self, manifest_path, max_samples: int, sample_rate: int = 16000,
                 resample: bool = False, random_crop: bool = True, seed: int = 1,
                 skip_bad_audio: bool = False, min_samples: int = 400,
                 bad_clip_hint: str = "set task.skip_bad_audio=true to skip such clips"):
        super().__init__()
        # What the error of a bad clip tells the user to do: training names its field,
        # the evaluation tools their own remedy.
        self.bad_clip_hint = bad_clip_hint
        self.manifest_path = manifest_path
        self.manifest = read_manifest(manifest_path)
        self.max_samples = max_samples
        self.sample_rate = sample_rate
        self.resample = resample
        self.random_crop = random_crop
        self.seed = seed
        self.skip_bad_audio = skip_bad_audio
        self.min_samples = min_samples
        self.epoch = 1
        self.skipped = 0
        self.sizes = np.minimum(np.asarray(self.manifest.sizes, dtype=np.int64), max_samples)

    def __len__(self):
        return len(self.manifest.paths)

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False  # crops depend on the epoch

    def _crop(self, wav: torch.Tensor, index: int) -> torch.Tensor:
        excess = wav.shape[0] - self.max_samples
        if excess <= 0:
            return wav
        start = 0
        if self.random_crop:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            start = int(rng.integers(0, excess + 1))
        return wav[start:start + self.max_samples]

    def __getitem__(self, index):
        path = self.manifest.full_path(index)
        try:
            wav = load_audio(path, sample_rate=self.sample_rate, resample=self.resample,
                             min_samples=self.min_samples)
        except AudioError as e:
            if not self.skip_bad_audio:
                raise AudioError(f"{e} (manifest {self.manifest_path}, clip {index}; "
                                 f"{self.bad_clip_hint})") from None
            self.skipped += 1
            logger.warning("skipping clip %d (%d skipped so far): %s", index, self.skipped, e)
            return {"id": index, "source": None}
        wav = self._crop(wav, index)
        # AudioMAE subtracts each clip's mean before the filterbank; doing it here, on
        # the real samples, keeps batch padding from shifting the mean.
        return {"id": index, "source": wav - wav.mean()}

    def collater(self, samples):
        samples = [s for s in samples if s["source"] is not None]
        if not samples:
            return {}
        lengths = torch.tensor([s["source"].shape[0] for s in samples], dtype=torch.long)
        # float64: fairseq's fp16/bf16 mode converts every float32 tensor of a sample
        # to half precision before the task sees it, which would quantise the audio;
        # features are computed in float32 from this exact copy.
        waveform = torch.zeros(len(samples), int(lengths.max()), dtype=torch.float64)
        for row, s in enumerate(samples):
            waveform[row, : s["source"].shape[0]] = s["source"]
        return {
            "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
            "nsentences": len(samples),
            "net_input": {"waveform": waveform, "lengths": lengths},
        }

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None,
                      required_batch_size_multiple=1):
        """fairseq's batching, except that (1) a last batch of a single clip is merged
        into the one before: batch norm and contrastive losses need at least two clips;
        (2) batch sizes are not rounded to ``required_batch_size_multiple``: fairseq
        silently drops the clips left over by that rounding (fairseq-validate asks for
        multiples of 8 by default), and every clip should count."""
        batches = list(super().batch_by_size(indices, max_tokens, max_sentences, 1))
        if len(batches) > 1 and len(batches[-1]) < 2:
            batches[-2] = np.concatenate([batches[-2], batches[-1]])
            batches.pop()
        return batches

    def num_tokens(self, index):
        return int(self.sizes[index])

    def size(self, index):
        return int(self.sizes[index])

    def ordered_indices(self):
        # fairseq only shuffles whole batches; contrastive learning needs different
        # negatives every epoch, so the clip order itself is reshuffled per epoch.
        if not self.random_crop:
            return np.arange(len(self))
        return np.random.default_rng((self.seed, self.epoch)).permutation(len(self))
