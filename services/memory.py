"""Process-wide memory allocator settings for batch inference.

Inference over many large batches allocates and frees the same big buffers (a batch of windows,
the model's activations) again and again. glibc's malloc serves blocks above its mmap threshold
(at most 32 MiB by its own rule) with fresh ``mmap`` calls and returns them on free, so every
batch pays page faults for memory it just gave back: on a 2-core machine that is more time in
the kernel than in the model. :func:`retain_freed_memory` raises the mmap and trim thresholds
with ``mallopt`` (glibc's public API) so freed blocks stay in the heap and are reused.

It changes the whole process: call it from a command's entry point (``eegfs predict``), not
from a library used by long-running servers. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: mallopt parameter numbers (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap and are reused after free.
DEFAULT_RETAIN_BYTES = 1 << 30


def retain_freed_memory(max_block_bytes: int = DEFAULT_RETAIN_BYTES) -> bool:
    """Keep freed blocks of up to ``max_block_bytes`` in the heap; True when glibc applied it."""
    if max_block_bytes <= 0 or max_block_bytes >= 1 << 31:
        raise ValueError(f"max_block_bytes must be in 1..2**31-1, got {max_block_bytes}")
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, max_block_bytes),
            (M_TRIM_THRESHOLD, max_block_bytes),
            (M_TOP_PAD, min(max_block_bytes, 256 << 20)),
        )
    )
    if not ok:
        log.debug("mallopt refused the thresholds; allocator left as it was")
    return ok


__all__ = ["DEFAULT_RETAIN_BYTES", "retain_freed_memory"]
