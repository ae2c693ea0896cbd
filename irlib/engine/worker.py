"""A local-executor worker: ``python -m irlib.engine.worker STORE DEVICE`` reads job keys from stdin, one per
line, runs each with :func:`irlib.engine.jobs.run_job`, and answers ``@@irlib ok KEY`` or
``@@irlib failed KEY message`` on stdout (everything else it prints goes to stderr, the slot's log).
SIGTERM makes the running job checkpoint and the worker exit."""
from __future__ import annotations

import signal
import sys


def _terminate(signum, frame):  # the trainer saves its checkpoint on KeyboardInterrupt
    # Further SIGTERMs are ignored from here on: a parent that dies while several of its threads are alive
    # sends its parent-death signal once per exiting thread (the kernel re-parents the worker to each surviving
    # thread in turn), and a second one must not interrupt the checkpoint the first one asked for. SIGKILL
    # still ends a worker that does not stop (the executor's grace period).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
    print(f"irlib worker: signal {signum} received at {where}; checkpointing and stopping", file=sys.stderr,
          flush=True)
    raise KeyboardInterrupt(f"signal {signum}")


def _tell(proto, line: str) -> None:
    """One protocol line to the executor; nothing when it is gone (a killed executor closes the pipe)."""
    try:
        proto.write(line)
        proto.flush()
    except (BrokenPipeError, OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m irlib.engine.worker STORE DEVICE", file=sys.stderr)
        return 2
    store, device = argv
    signal.signal(signal.SIGTERM, _terminate)
    proto = sys.stdout
    sys.stdout = sys.stderr  # only protocol lines on the pipe
    from ..procs import memory_gib, release_memory
    from .execute import PROTOCOL
    from .jobs import run_job

    for line in sys.stdin:
        key = line.strip()
        if not key:
            continue
        try:
            run_job(store, key, device)
            _tell(proto, f"{PROTOCOL}ok {key}\n")
        except KeyboardInterrupt:
            _tell(proto, f"{PROTOCOL}failed {key} interrupted\n")
            return 130
        except Exception as e:  # recorded in the store's error.json as well
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:500]
            _tell(proto, f"{PROTOCOL}failed {key} {msg}\n")
        before = memory_gib()[0]
        release_memory()
        rss, peak = memory_gib()
        print(f"irlib worker: after job {key}: resident {before:.2f} -> {rss:.2f} GiB after release, "
              f"peak so far {peak:.2f} GiB", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
