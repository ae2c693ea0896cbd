"""A long-lived local worker hands freed heap back to the system between jobs (irlib.procs.release_memory)."""
import sys

import pytest

from irlib.procs import memory_gib, release_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim and /proc are Linux's")
def test_freed_heap_goes_back_to_the_system():
    rss0, peak0 = memory_gib()
    assert 0 < rss0 <= peak0
    blocks = [bytearray(100_000) for _ in range(3000)]   # ~300 MB of heap blocks (under the mmap threshold)
    for b in blocks:
        b[::4096] = b"\x01" * len(b[::4096])             # touch every page
    keep = blocks[-1]                                    # the top block stays: plain free() cannot shrink the heap
    del blocks
    import gc

    gc.collect()
    held = memory_gib()[0]
    release_memory()
    after, peak = memory_gib()
    assert held - after > 0.2, (held, after)             # GiB handed back by malloc_trim
    assert peak >= held - 0.01 and len(keep) == 100_000   # getrusage and /proc sample at different times
