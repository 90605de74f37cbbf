from . import checkpoint_broadcast, checkpoint_safety
# Atomic checkpoint files, one run per checkpoint.save_dir, finished runs stop: see
# checkpoint_safety.py; resuming with several ranks: see checkpoint_broadcast.py.
# Installed here because fairseq imports the plugin (common.user_dir) before it builds
# the trainer.
checkpoint_safety.install()
checkpoint_broadcast.install()

from . import uamix_contrastive  # noqa: F401
from . import uamix_audio_classification  # noqa: F401
from . import uamix_mae_pretraining  # noqa: F401
