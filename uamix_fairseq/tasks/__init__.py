from . import uamix_contrastive  # noqa: F401
from . import uamix_audio_classification  # noqa: F401
