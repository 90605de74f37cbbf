from . import uamix_nnclr  # noqa: F401
