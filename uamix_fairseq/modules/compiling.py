"""``torch.compile`` of the encoder (``model.compile``, ``bench_gpu.py --compile``).

Regional compilation: each transformer block is compiled in place with
``nn.Module.compile`` rather than wrapping the encoder in ``torch.compile(encoder)``.
In place, the parameter names (and so checkpoints, checkpoint averaging and
``save_audiomae`` files) stay exactly as they are, with no ``_orig_mod.`` prefix; and
the frozen prefix keeps running its blocks under ``torch.no_grad()``, so it still keeps
no activations and gets no gradients. The blocks share one code object, so the
compiled graphs are reused across blocks (one per grad mode and train/eval), and a
change of the freezing stage needs no new compilation.

Nothing here imports fairseq.
"""

import os
import platform
import shutil
import sys
from typing import Optional

import torch
from torch import nn


def compile_unsupported_reason(device_type: Optional[str] = None) -> Optional[str]:
    """Why ``torch.compile`` cannot run here, or None when it can.

    ``device_type`` (``"cpu"``, ``"cuda"``): also check that device's code generator
    (a C++ compiler for CPU, triton for CUDA); None checks only torch itself.
    """
    version = f"torch {torch.__version__} on Python {platform.python_version()}"
    if not hasattr(torch, "compile") or not hasattr(nn.Module, "compile"):
        return f"{version} has no in-place nn.Module.compile (needs torch >= 2.2)"
    try:
        from torch import _dynamo
    except Exception as e:  # pragma: no cover - broken installs
        return f"{version}: torch._dynamo does not import ({type(e).__name__}: {e})"
    if not _dynamo.is_dynamo_supported():
        return f"{version}: torch.compile does not support this Python ({sys.version.split()[0]})"
    if device_type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            compiler = get_cpp_compiler()
        except Exception as e:
            return (f"{version}: torch.compile on CPU needs a C++ compiler and none was "
                    f"found ({type(e).__name__}: {e}); install g++ or set CXX")
        if shutil.which(compiler) is None and not os.path.isfile(compiler):
            return (f"{version}: torch.compile on CPU needs a C++ compiler; {compiler!r} "
                    "is not on PATH; install g++ or set CXX")
    elif device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return f"{version}: torch.compile on CUDA needs triton, which is not installed"
    return None


def compile_encoder_blocks(encoder: nn.Module, **compile_kwargs) -> nn.Module:
    """Compile every block of ``encoder`` in place (see the module docstring); returns
    ``encoder``. ``compile_kwargs`` go to ``torch.compile`` (e.g. ``mode=...``)."""
    for block in encoder.blocks:
        block.compile(**compile_kwargs)
    return encoder
