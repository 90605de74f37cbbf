from . import uamix_nnclr  # noqa: F401
from . import uamix_classification  # noqa: F401
from . import uamix_mae  # noqa: F401
from . import uamix_mae_nnclr  # noqa: F401
from . import uamix_swaro  # noqa: F401
