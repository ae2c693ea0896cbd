"""Released checkpoints and frozen feature networks, as data: one manifest per file in
``data_manifests/weights/<name>.yaml`` (overridable with ``IRLIB_WEIGHT_MANIFESTS``).

Manifest fields:

* ``name``, ``title``, ``kind``: one of :data:`KINDS`.
* ``url`` (null where only a cloud-drive folder exists), ``filename``, ``sha256`` (null where none is
  published — never guessed), ``sha256_prefix`` (the leading hex digits some releases put in file names,
  e.g. torchvision's ``vgg19-dcbb9e9d.pth`` or BasicSR's ``-3ba7b086.pth``; checked after download),
  ``size`` in bytes (null where unknown), ``manual``: how to get the file by hand when ``url`` is null.
* ``source``: where the facts come from (repository + file). ``used_by``: which paper/table/method uses it.
* ``network``: ``module:Class.constructor`` that builds the matching irlib network, ``args`` for it,
  ``container``: where the weights sit in the file (for :func:`irlib.models.release.load_release`).
* kind ``torchvision``: ``torchvision`` = the weights enum; the file lives in torch's hub cache
  (``$TORCH_HOME/hub/checkpoints``). Kinds ``timm`` / ``huggingface``: ``hf_repo`` (+ ``revision``,
  ``extra_files``); the files live in the Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``).

:func:`fetch_weights` downloads ``release checkpoint`` / ``url`` files with :func:`irlib.data.fetch.fetch`
(verified, atomic: into ``<root>/<name>/``), torchvision files with the same download into torch.hub's cache
(hash-prefix checked, fsync'd, atomic), and hub files with ``huggingface_hub.hf_hub_download``. Every download
refuses a body shorter than its announced ``Content-Length`` (pinned or not), and the ``.partial`` files a killed
download left are removed at the next start.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import yaml

from .data.datasets import DatasetError
from .data.fetch import ChecksumError, _download, clean_stale, fetch, sha256_file

KINDS = ("release checkpoint", "torchvision", "timm", "huggingface", "url")
REQUIRED = ("name", "title", "kind", "url", "filename", "sha256", "size", "source", "used_by")


class WeightsError(DatasetError):
    """A weights manifest is invalid, or its file cannot be fetched; the message says what to do."""


def manifest_dir() -> Path:
    """``data_manifests/weights`` of the repository (or ``$IRLIB_WEIGHT_MANIFESTS``)."""
    env = os.environ.get("IRLIB_WEIGHT_MANIFESTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data_manifests" / "weights"


def _validate(m: dict, where: Path) -> dict:
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise WeightsError(f"weights manifest {where} lacks {', '.join(missing)}")
    if m["kind"] not in KINDS:
        raise WeightsError(f"weights manifest {where}: kind {m['kind']!r} is not one of {', '.join(KINDS)}")
    if m["name"] != where.stem:
        raise WeightsError(f"weights manifest {where}: name {m['name']!r} differs from the file name")
    hub = m["kind"] in ("timm", "huggingface")
    if hub and not m.get("hf_repo"):
        raise WeightsError(f"weights manifest {where}: kind {m['kind']} needs hf_repo")
    if not hub and m["url"] is None and not m.get("manual"):
        raise WeightsError(f"weights manifest {where}: url is null, so 'manual' must say how to get the file")
    sha = m.get("sha256")
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
        raise WeightsError(f"weights manifest {where}: sha256 {sha!r} is not 64 hex digits")
    return m


def load_weight_manifest(name: str) -> dict:
    """The manifest ``name`` (validated)."""
    p = manifest_dir() / f"{name}.yaml"
    if not p.is_file():
        known = ", ".join(sorted(x.stem for x in manifest_dir().glob("*.yaml")))
        raise WeightsError(f"no weights manifest {name!r} in {manifest_dir()}; known: {known}")
    with open(p) as f:
        return _validate(yaml.safe_load(f), p)


def list_weights() -> list[dict]:
    """Every weights manifest, sorted by name."""
    return [load_weight_manifest(p.stem) for p in sorted(manifest_dir().glob("*.yaml"))]


def torch_hub_dir() -> Path:
    """torch's hub cache (``torch.hub.get_dir()``: ``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``)."""
    import torch.hub

    return Path(torch.hub.get_dir())


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expanduser(home)) / "hub"


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hf_files(m: dict) -> list[str]:
    return [m["filename"], *m.get("extra_files", [])]


def _hf_snapshot(m: dict) -> Path | None:
    """The cached snapshot folder holding every file of ``m``, if any."""
    snaps = hf_cache_dir() / ("models--" + m["hf_repo"].replace("/", "--")) / "snapshots"
    for snap in sorted(snaps.glob("*")) if snaps.is_dir() else []:
        if all((snap / f).is_file() for f in _hf_files(m)):
            return snap
    return None


def weights_path(m: dict, root: str | Path) -> Path:
    """Where the (main) file of manifest ``m`` lives once fetched."""
    if m["kind"] == "torchvision":
        return torch_hub_dir() / "checkpoints" / m["filename"]
    if m["kind"] in ("timm", "huggingface"):
        snap = _hf_snapshot(m)
        base = snap if snap is not None else hf_cache_dir() / ("models--" + m["hf_repo"].replace("/", "--")) / "snapshots"
        return base / m["filename"]
    return Path(root) / m["name"] / (m["filename"] or "")


def weights_status(name: str, root: str | Path) -> dict[str, Any]:
    """``{"state": "present" | "missing" | "manual", "where": path, "hint": what to do}`` for weights ``name``.
    ``root`` is the weights folder for release/url files; torchvision and hub files are looked up in their
    caches (``TORCH_HOME``, ``HF_HUB_CACHE`` / ``HF_HOME``; ``HF_HUB_OFFLINE`` is reported in the hint)."""
    m = load_weight_manifest(name)
    where = weights_path(m, root)
    hub = m["kind"] in ("timm", "huggingface")
    present = _hf_snapshot(m) is not None if hub else bool(m["filename"]) and where.is_file()
    if present:
        return {"state": "present", "where": str(where), "hint": ""}
    if hub:
        hint = (f"HF_HUB_OFFLINE is set: copy the files {', '.join(_hf_files(m))} of {m['hf_repo']} into "
                f"{hf_cache_dir()} on a machine with network access" if _hf_offline()
                else f"irlib weights fetch {name} (downloads {m['hf_repo']} into {hf_cache_dir()})")
        return {"state": "missing", "where": str(where), "hint": hint}
    if m["url"] is None:
        return {"state": "manual", "where": str(where), "hint": f"{m['manual']} Place the file at {where}."}
    return {"state": "missing", "where": str(where), "hint": f"irlib weights fetch {name} (from {m['url']})"}


def fetch_weights(name: str, root: str | Path, allow_unverified: bool = False) -> Path:
    """Download weights ``name``; returns the path of the (main) file. Release/url files go to
    ``<root>/<name>/<filename>`` through the verified atomic :func:`irlib.data.fetch.fetch`; a file with
    neither ``sha256`` nor ``sha256_prefix`` is refused unless ``allow_unverified`` (its hash is then pinned
    in ``<root>/<name>/.sha256``). A checksum mismatch raises :class:`~irlib.data.fetch.ChecksumError` and
    leaves nothing behind."""
    m = load_weight_manifest(name)
    if m["kind"] in ("timm", "huggingface"):
        return _fetch_hub(m)
    if m["url"] is None:
        raise WeightsError(f"{name} cannot be downloaded by script: {m['manual']} Place it at {weights_path(m, root)}.")
    if m["kind"] == "torchvision":
        return _fetch_torchvision(m, allow_unverified)
    prefix = None if m["sha256"] else m.get("sha256_prefix")
    spec = {"name": m["name"], "manual": m.get("manual") or "",
            "files": [{"url": m["url"], "filename": m["filename"], "sha256": m["sha256"], "size": m["size"],
                       "sha256_prefix": prefix}]}   # fetch() checks the prefix before anything is renamed into place
    try:
        target = fetch(m["name"], root, allow_unverified=allow_unverified, manifest=spec)
    except ChecksumError:
        raise
    except DatasetError as e:
        raise WeightsError(f"weights {name}: {e}") from e
    path = target / m["filename"]
    if not path.is_file():
        raise WeightsError(f"weights {name}: {target} exists but holds no {m['filename']}; remove the folder and fetch again")
    return path


def _fetch_torchvision(m: dict, allow_unverified: bool) -> Path:
    dest = weights_path(m, "")
    if dest.is_file():
        return dest
    prefix = m.get("sha256_prefix")
    if not (m["sha256"] or prefix or allow_unverified):
        raise ChecksumError(f"{m['filename']}: manifest has no checksum; pass allow_unverified=True to accept it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # what killed downloads left: ours carry a pid, torch.hub's (NAME.<uuid>.partial) none
    clean_stale(dest.parent, f".{dest.name}.*.partial")
    clean_stale(dest.parent, f"{dest.name}.*.partial", min_age_s=3600)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        _download(m["url"], tmp)   # refuses a body shorter than its Content-Length, pinned or not
        digest = sha256_file(tmp)
        if prefix and not digest.startswith(prefix.lower()):
            raise ChecksumError(f"{m['filename']}: sha256 {digest} does not start with {prefix} (the published prefix)")
        if m["sha256"] and digest != m["sha256"].lower():
            raise ChecksumError(f"{m['filename']}: sha256 {digest} does not match the manifest")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except OSError as e:
        raise WeightsError(f"weights {m['name']}: download of {m['url']} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fetch_hub(m: dict) -> Path:
    snap = _hf_snapshot(m)
    if snap is not None:
        return snap / m["filename"]
    if _hf_offline():
        raise WeightsError(f"weights {m['name']}: HF_HUB_OFFLINE is set and {m['hf_repo']} is not in {hf_cache_dir()}")
    from huggingface_hub import hf_hub_download

    paths = [hf_hub_download(m["hf_repo"], f, revision=m.get("revision"), cache_dir=str(hf_cache_dir()))
             for f in _hf_files(m)]
    return Path(paths[0])


def resolve_network(m: dict):
    """The constructor named by ``m['network']`` (``module:Class.method`` or ``module:function``)."""
    mod, _, attr = m["network"].partition(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
