"""Load a released checkpoint into an irlib network, strictly.

Releases wrap their weights in different containers:

* BasicSR / KAIR files (EDSR, SwinIR, NAFNet, Restormer): ``{"params": ...}`` and/or ``{"params_ema": ...}``.
  When both are present :func:`load_release` takes ``params_ema`` (the exponential moving average the
  releases evaluate with, e.g. KAIR's ``E`` model); pass ``key="params"`` for the raw weights.
* ``{"state_dict": ...}`` (DehazeFormer), ``{"model": ...}`` (FFA-Net), ``{"net": ...}``,
  ``{"model_state_dict": ...}``, or a bare state dict (IAT, GridDehazeNet).
* Keys prefixed by ``module.`` (saved from ``nn.DataParallel``: FFA-Net, DehazeFormer, GridDehazeNet) or
  ``_orig_mod.`` (``torch.compile``): the prefix is removed when every key carries it.

The state dict then goes through ``load_state_dict(strict=True)``; any mismatch raises
:class:`ReleaseLoadError` naming the file and the first missing, unexpected and wrongly shaped keys with
their counts. Files are read with ``torch.load(weights_only=True)``: a file that pickles whole Python objects
(e.g. MSBDN's ``torch.save(model)``) is refused with an explanation unless ``trust_pickle=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

#: container keys, in the order they are tried (``params_ema`` before ``params``)
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net", "network")
PREFIXES = ("module.", "_orig_mod.")


class ReleaseLoadError(RuntimeError):
    """A checkpoint cannot be read, or does not match the network key for key."""


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state(obj: Any, key: str | None = None, where: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, how it was found) from a loaded checkpoint object: a state dict, a module, or containers
    around one (see :data:`CONTAINER_KEYS`; ``key`` forces one). Prefixes in :data:`PREFIXES` are removed."""
    path: list[str] = []
    for _ in range(4):  # containers nest at most a few levels deep
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
            path.append("<module>.state_dict()")
            continue
        if _is_state(obj) and key is None:
            break
        if not isinstance(obj, Mapping):
            raise ReleaseLoadError(f"{where}: expected a state dict or a dict holding one, got {type(obj).__name__}")
        wanted = [key] if key is not None else [k for k in CONTAINER_KEYS if k in obj]
        found = [k for k in wanted if isinstance(obj.get(k), (Mapping, nn.Module))]
        if not found:
            keys = ", ".join(map(str, list(obj)[:8]))
            want = f"key {key!r}" if key is not None else "a state dict or one of " + ", ".join(CONTAINER_KEYS)
            raise ReleaseLoadError(f"{where}: expected {want}; top-level keys are: {keys}")
        path.append(found[0])
        obj, key = obj[found[0]], None
    if not _is_state(obj):
        raise ReleaseLoadError(f"{where}: no tensor state dict found (looked in {' -> '.join(path) or 'top level'})")
    state = dict(obj)
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            path.append(f"strip {prefix!r}")
    return state, " -> ".join(path) or "bare state dict"


def _read(path: Path, trust_pickle: bool) -> Any:
    if not path.is_file():
        raise ReleaseLoadError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:  # noqa: BLE001 - torch raises several types for unreadable files
        if not trust_pickle and "weights_only" in str(e):
            raise ReleaseLoadError(
                f"{path}: the file pickles Python objects, not only tensors (e.g. a whole model saved with "
                f"torch.save(model)). Unpickle it where the release's code is importable and save "
                f"model.state_dict(), or pass trust_pickle=True if you trust the file. ({type(e).__name__})") from e
        raise ReleaseLoadError(f"{path}: cannot read checkpoint: {e}") from e


def _head(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def check_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str = "checkpoint",
                strict: bool = True) -> None:
    """Raise :class:`ReleaseLoadError` unless ``state`` fits ``model`` (same keys when ``strict``; same shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing keys: {_head(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_head(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} keys with other shapes (file vs network): {_head(shapes, 3)}")
    if problems:
        raise ReleaseLoadError(f"{where} does not fit {type(model).__name__}: " + "; ".join(problems))


def load_release(model: nn.Module, path_or_state: str | Path | Mapping | nn.Module, *, strict: bool = True,
                 key: str | None = None, convert: Callable[[dict], dict] | None = None,
                 trust_pickle: bool = False) -> nn.Module:
    """Load a release checkpoint (file path, loaded object, or module) into ``model``; returns ``model``.

    ``key`` picks a container entry (default: ``params_ema``, then ``params``, ``state_dict``, ...);
    ``convert`` maps the unwrapped state dict to ``model``'s names first (e.g.
    :func:`irlib.models.edsr.from_edsr_pytorch`). With ``strict=False`` missing/unexpected keys are allowed
    (shapes must still agree)."""
    if isinstance(path_or_state, (str, Path)):
        where = str(path_or_state)
        obj = _read(Path(path_or_state), trust_pickle)
    else:
        where, obj = f"in-memory {type(path_or_state).__name__}", path_or_state
    state, _how = unwrap_state(obj, key=key, where=where)
    if convert is not None:
        state = convert(state)
    check_state(model, state, where, strict)
    model.load_state_dict(state, strict=strict)
    return model
