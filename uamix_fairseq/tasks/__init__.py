from . import checkpoint_safety
# Atomic checkpoint files, one run per checkpoint.save_dir, finished runs stop: see
# checkpoint_safety.py. Installed here because fairseq imports the plugin (common.user_dir)
# before it builds the trainer.
checkpoint_safety.install()

from . import uamix_contrastive  # noqa: F401
from . import uamix_audio_classification  # noqa: F401
from . import uamix_mae_pretraining  # noqa: F401
