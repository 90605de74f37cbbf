from . import uamix_audiomae  # noqa: F401
from . import uamix_audiomae_classifier  # noqa: F401
from . import uamix_audiomae_mae  # noqa: F401
from . import uamix_audiomae_joint  # noqa: F401
from . import uamix_audiomae_swaro  # noqa: F401
