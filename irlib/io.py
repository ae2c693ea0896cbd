"""Durable file writes and named-file reads, the one home for both (the run store, reports, downloads and
checkpoints use them).

* :func:`atomic_write_text` / :func:`atomic_write_bytes` / :func:`atomic_torch_save`: write to a hidden
  ``.NAME.<pid>.partial`` beside the target, flush and ``fsync`` it, ``os.replace`` it into place and ``fsync`` the
  folder, so a reader sees the old file or the whole new one, and a crash or power loss never leaves a half file
  under the real name.
* :func:`read_json`: JSON from a file, or a :class:`CorruptFile` naming the file and what to do.
* :func:`clean_partials`: remove the ``.partial`` litter a killed writer left behind.
* :func:`quarantine`: rename a corrupt file aside (``NAME.corrupt-<time>``) so it is never read again, yet kept
  for a post-mortem.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


class CorruptFile(RuntimeError):
    """A file irlib wrote earlier cannot be read back; the message names it and what to do."""

    def __init__(self, path: str | Path, what: str, advice: str = "delete it and re-run"):
        super().__init__(f"{path}: {what}; {advice}")
        self.path = Path(path)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


FULL_BELOW = 1 << 20
"""Free bytes under which a failed write is reported as a full disk (measured while the partial file still holds
its blocks)."""


def free_bytes(folder: str | Path) -> int | None:
    """Bytes an unprivileged writer may still use on the file system of ``folder`` (None when unknown)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    import errno

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        free = free_bytes(path.parent)
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or (free is not None and free < FULL_BELOW):
            # torch's zip writer reports a full disk as "unexpected pos …": name the cause and the file
            raise OSError(errno.ENOSPC, f"No space left on device while writing {path} ({free} bytes free there; "
                                        f"{type(e).__name__}: {str(e)[:200]})") from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:   # our handle: closed (blocks released) before the error is handled
            torch.save(obj, f)

    return _atomic(path, write)


def read_json(path: str | Path, advice: str = "delete it and re-run") -> Any:
    """The JSON in ``path``; :class:`CorruptFile` (naming the file) when it is empty, truncated or not JSON.
    A missing file raises FileNotFoundError as usual."""
    path = Path(path)
    text = path.read_text(errors="replace")
    try:
        return json.loads(text)
    except ValueError as e:
        raise CorruptFile(path, f"not valid JSON ({e.msg} at line {e.lineno}, {len(text)} bytes)", advice) from None


def quarantine(path: str | Path) -> Path | None:
    """Rename the corrupt file (or folder) ``path`` to ``NAME.corrupt-<YYYYmmddTHHMMSS>[-n]`` beside it; returns the
    new name, or None when it could not be moved (a read-only store, or it is already gone)."""
    import time

    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(100):
        target = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{n}" if n else ""))
        if target.exists():
            continue
        try:
            os.rename(path, target)
        except OSError:
            return None
        _fsync_dir(path.parent)
        return target
    return None


def clean_partials(folder: str | Path, pattern: str = "**/.*.partial") -> list[Path]:
    """Remove ``.partial`` files under ``folder`` whose writer is gone (its pid is not alive); returns them."""
    out = []
    for p in Path(folder).glob(pattern):
        pid = p.name.rsplit(".", 2)[-2] if p.name.count(".") >= 3 else ""
        if pid.isdigit() and pid_alive(int(pid)):
            continue
        try:
            p.unlink()
            out.append(p)
        except OSError:
            pass
    return out


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
