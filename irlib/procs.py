"""Child process groups: stop them together (SIGTERM, then SIGKILL after a grace period), and make a child die
with its parent even when the parent is killed with SIGKILL (Linux ``PR_SET_PDEATHSIG``)."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Iterable

_PR_SET_PDEATHSIG = 1


def stop_process_groups(procs: Iterable[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM the process group of each running ``proc`` (each was started with ``start_new_session=True``),
    then SIGKILL what is still alive after ``grace`` seconds."""
    procs = [p for p in procs if p.poll() is None]
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``sig`` when the process that started it
    dies, however it dies (no-op outside Linux)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
    except OSError:
        pass


def memory_gib() -> tuple[float, float]:
    """(resident, peak resident) memory of this process in GiB, read from /proc and getrusage (Linux; zeros
    where unavailable)."""
    import resource

    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # kilobytes on Linux
    return rss / 2**30, peak / 2**30


def release_memory() -> None:
    """Collect garbage and hand the heap's free pages back to the system (glibc ``malloc_trim``): a long-lived
    worker otherwise keeps the peak of every job it ran, which adds up across workers on a small machine."""
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):   # not glibc (e.g. musl)
            pass
