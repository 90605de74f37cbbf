from . import uamix_contrastive  # noqa: F401
from . import uamix_audio_classification  # noqa: F401
from . import uamix_mae_pretraining  # noqa: F401
