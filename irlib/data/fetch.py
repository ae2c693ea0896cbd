"""Dataset manifests and verified, atomic downloads.

A manifest (``data_manifests/NAME.yaml``) lists files with ``url``, ``sha256`` (null where no
published checksum is known) and ``size``; ``layout`` documents the folders the notebooks expect.
:func:`fetch` downloads into ``<root>/.partial``, checks size and sha256, extracts into a temporary
folder and only then renames it to ``<root>/<NAME>``: a failed or corrupted download leaves nothing
behind. A file whose manifest has no checksum is refused unless ``allow_unverified=True``; its
computed hash is then written to ``<root>/<NAME>/.sha256`` so the next fetch can pin it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from .datasets import DatasetError


class ChecksumError(DatasetError):
    """A downloaded file does not match the checksum or size in its manifest."""


def manifest_dir() -> Path:
    """The repository's ``data_manifests`` folder (overridable with ``IRLIB_MANIFESTS``)."""
    env = os.environ.get("IRLIB_MANIFESTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data_manifests"


def load_manifest(name_or_path: str | Path) -> dict:
    p = Path(name_or_path)
    if not p.suffix:
        p = manifest_dir() / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(x.stem for x in manifest_dir().glob("*.yaml"))
        raise DatasetError(f"no manifest {p}; known: {', '.join(known)}")
    with open(p) as f:
        m = yaml.safe_load(f)
    for key in ("name", "files"):
        if key not in m:
            raise DatasetError(f"manifest {p} lacks '{key}'")
    return m


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class ShortDownload(OSError):
    """The server announced a Content-Length and sent fewer (or more) bytes: the file is refused, pinned or not."""


def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """``url`` into ``dest``; :class:`ShortDownload` when the body's length differs from the announced
    ``Content-Length`` (also when no checksum is pinned, so a cut-off file is never accepted or pinned)."""
    import http.client

    got = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                for block in iter(lambda: r.read(1 << 20), b""):
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
    except http.client.IncompleteRead as e:
        raise ShortDownload(f"{url}: the connection closed after {got + len(e.partial)} bytes, before the "
                            f"announced Content-Length") from None
    if total is not None and got != total:
        raise ShortDownload(f"{url}: received {got} bytes, but the server announced Content-Length {total}")


def clean_stale(folder: Path, pattern: str, min_age_s: float = 0.0) -> list[Path]:
    """Remove what killed downloads left under ``folder`` (files or folders matching ``pattern``): entries
    whose name carries the pid of a process that is gone (``….<pid>.<suffix>``), or, without a pid, that nobody has
    written for ``min_age_s`` seconds. Returns what was removed."""
    import time

    from ..io import pid_alive

    out = []
    for p in Path(folder).glob(pattern):
        parts = p.name.split(".")
        pid = parts[-2] if len(parts) >= 3 and parts[-2].isdigit() else None
        if pid is not None and pid_alive(int(pid)):
            continue
        if pid is None and time.time() - p.stat().st_mtime < min_age_s:
            continue
        try:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            out.append(p)
        except OSError:
            pass
    return out


def _extract(archive: Path, into: Path) -> None:
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for m in z.namelist():
                    if Path(m).is_absolute() or ".." in Path(m).parts:
                        raise DatasetError(f"unsafe path {m!r} in {archive.name}")
                z.extractall(into)
        elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            with tarfile.open(archive) as t:
                t.extractall(into, filter="data")
        else:
            shutil.copy2(archive, into / archive.name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"cannot extract {archive.name}: {e}") from e


def fetch(name: str, root: str | Path, *, allow_unverified: bool = False, force: bool = False,
          manifest: dict | None = None) -> Path:
    """Download and extract dataset ``name`` into ``root/name``; returns that folder."""
    m = manifest or load_manifest(name)
    if any(e.get("url") is None for e in m["files"]):
        raise DatasetError(f"{m['name']} cannot be downloaded by script. {m.get('manual', '')}")
    root = Path(root)
    target = root / m["name"]
    if target.exists() and not force:
        return target
    root.mkdir(parents=True, exist_ok=True)
    partial = root / ".partial"
    partial.mkdir(exist_ok=True)
    clean_stale(partial, f"{m['name']}.*", min_age_s=3600)   # staging folders of killed fetches
    staging = Path(tempfile.mkdtemp(prefix=f"{m['name']}.{os.getpid()}.", dir=partial))
    pins = []
    try:
        for entry in m["files"]:
            url = entry["url"]
            fname = entry.get("filename") or url.rstrip("/").split("/")[-1]
            dl = staging / fname
            try:
                _download(url, dl)
            except OSError as e:
                raise DatasetError(f"download of {url} failed: {e}. Hosts may be unreachable; download it by "
                                   f"hand and place the extracted folder at {target}") from e
            if entry.get("size") is not None and dl.stat().st_size != int(entry["size"]):
                raise ChecksumError(f"{fname}: size {dl.stat().st_size} != manifest {entry['size']}")
            digest = sha256_file(dl)
            want, prefix = entry.get("sha256"), entry.get("sha256_prefix")
            if want:
                if digest != want.lower():
                    raise ChecksumError(f"{fname}: sha256 {digest} does not match manifest {want}")
            elif prefix:  # torchvision-style names carry the first hex digits of the file's sha256
                if not digest.startswith(prefix.lower()):
                    raise ChecksumError(f"{fname}: sha256 {digest} does not start with {prefix} (the published prefix)")
            elif not allow_unverified:
                raise ChecksumError(f"{fname}: manifest has no sha256 for {url}; re-run with --allow-unverified "
                                    f"to accept {digest} (it is then recorded in {target}/.sha256)")
            pins.append(f"{digest}  {fname}")
            out = staging / "out" / entry.get("subdir", "")
            out.mkdir(parents=True, exist_ok=True)
            _extract(dl, out)
            dl.unlink()
        (staging / "out" / ".sha256").write_text("\n".join(pins) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "out", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            partial.rmdir()
        except OSError:
            pass
    return target
