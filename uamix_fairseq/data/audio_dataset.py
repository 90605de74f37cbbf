"""A fairseq dataset of audio clips listed in a manifest.

One data path for every task: manifest -> waveform (decoded, mono, checked) -> crop ->
batch of waveforms with their lengths. Features and views are computed later, on the
batch and on the training device (see ``uamix_fairseq.audio.features.batch_fbank``).
"""

import logging

import numpy as np
import torch
from fairseq.data import FairseqDataset

from ..audio.decode import AudioError, audio_length, load_audio
from ..manifest import read_manifest

logger = logging.getLogger(__name__)


class AudioClipDataset(FairseqDataset):
    """Clips of a fairseq audio manifest, cropped to at most ``max_samples``.

    Training crops start at a random offset drawn from ``(seed, epoch, index)``, so a
    resumed run sees the same crops; evaluation crops start at 0 (as AudioMAE does).
    Only the crop is decoded from clips over 60 s (``load_audio(start=, num_samples=)``),
    with the same samples as cropping the whole decode.
    With ``skip_bad_audio`` an unreadable or invalid clip is dropped from its batch,
    counted and logged instead of stopping the run; a batch left with fewer than
    ``min_batch_size`` clips is dropped whole (counted and logged): the collater returns
    an empty batch, which fairseq's trainer replaces by its dummy batch, run without
    effect on the loss (see tasks/batching.py).
    """

    def __init__(self, manifest_path, max_samples: int, sample_rate: int = 16000,
                 resample: bool = False, random_crop: bool = True, seed: int = 1,
                 skip_bad_audio: bool = False, min_samples: int = 400,
                 min_batch_size: int = 1,
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
        self.min_batch_size = min_batch_size
        self.epoch = 1
        self.skipped = 0
        self.dropped_batches = 0  # counted in this process (each loader worker its own)
        self.sizes = np.minimum(np.asarray(self.manifest.sizes, dtype=np.int64), max_samples)

    def __len__(self):
        return len(self.manifest.paths)

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False  # crops depend on the epoch

    def _crop_start(self, length: int, index: int) -> int:
        """First sample of the crop of clip ``index``, whose whole length is ``length``
        samples (the decoded file's, not the manifest's: they agree unless the file was
        replaced). Drawn from ``(seed, epoch, index)`` exactly as before partial reads,
        so runs and resumes see the same crops."""
        excess = length - self.max_samples
        if excess <= 0 or not self.random_crop:
            return 0
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return int(rng.integers(0, excess + 1))

    def __getitem__(self, index):
        path = self.manifest.full_path(index)
        try:
            # Only the crop is decoded from long files (see load_audio).
            length = audio_length(path, sample_rate=self.sample_rate, resample=self.resample)
            wav = load_audio(path, sample_rate=self.sample_rate, resample=self.resample,
                             min_samples=self.min_samples,
                             start=self._crop_start(length, index),
                             num_samples=self.max_samples)
        except AudioError as e:
            if not self.skip_bad_audio:
                raise AudioError(f"{e} (manifest {self.manifest_path}, clip {index}; "
                                 f"{self.bad_clip_hint})") from None
            self.skipped += 1
            logger.warning("skipping clip %d (%d skipped so far): %s", index, self.skipped, e)
            return {"id": index, "source": None}
        # AudioMAE subtracts each clip's mean before the filterbank; doing it here, on
        # the real samples, keeps batch padding from shifting the mean.
        return {"id": index, "source": wav - wav.mean()}

    def collater(self, samples):
        kept = [s for s in samples if s["source"] is not None]
        if samples and len(kept) < self.min_batch_size:
            self.dropped_batches += 1
            logger.warning("dropping a batch of %d clips: only %d readable left, fewer than "
                           "the %d a batch needs (%d batches dropped so far in this "
                           "process)", len(samples), len(kept), self.min_batch_size,
                           self.dropped_batches)
            return {}
        samples = kept
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
        if len(batches) > 1 and len(batches[-1]) < max(2, self.min_batch_size):
            batches[-2] = np.concatenate([batches[-2], batches[-1]])
            batches.pop()
        small = [b for b in batches if len(b) < self.min_batch_size]
        if small:
            raise ValueError(
                f"{self.manifest_path}: {len(small)} of {len(batches)} batches hold fewer "
                f"than {self.min_batch_size} clips (dataset.max_tokens={max_tokens}, "
                f"{len(indices)} clips); raise dataset.max_tokens or set dataset.batch_size")
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
