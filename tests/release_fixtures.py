"""Helpers for the release-fidelity tests: facts about each release, committed as data under
``tests/fixtures/release/`` (never the release's code).

A key fixture ``<name>.json`` holds ``{"source", "config", "params": {key: shape}, "buffers": {key: shape},
"param_count"}`` generated once from the release's own model definition in scratch space. An optional
output fixture ``<name>.pt`` holds ``{"input", "output", "seed"}``: the release's output for ``input`` when every
parameter and persistent buffer is filled by :func:`deterministic_state` — irlib's network filled the same way
must give the same output.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures" / "release"


def load_keys(name: str) -> dict:
    """The key fixture ``<name>.json``."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def state_shapes(model: torch.nn.Module) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """(parameter shapes, persistent-buffer shapes) of ``model`` as in its ``state_dict``."""
    params = {k: list(p.shape) for k, p in model.named_parameters()}
    sd = model.state_dict()
    buffers = {k: list(v.shape) for k, v in sd.items() if k not in params}
    return params, buffers


def deterministic_state(shapes: dict[str, list[int]], seed: int = 0, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """A float32 value for every key, a pure function of (seed, key, shape): the same on any machine and in any
    key order, so a release model and irlib's can be filled identically."""
    out = {}
    for key, shape in shapes.items():
        h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")
        g = torch.Generator().manual_seed(h)
        out[key] = torch.randn(shape, generator=g) * scale
    return out


def fill(model: torch.nn.Module, seed: int = 0, scale: float = 0.05, keep: tuple[str, ...] = ()) -> torch.nn.Module:
    """Give every parameter of ``model`` (except those named in ``keep``) its :func:`deterministic_state` value.

    Buffers are left alone: they are computed constants (index tables, masks, mean shifts) that the release
    and irlib both build themselves."""
    params, _ = state_shapes(model)
    values = deterministic_state(params, seed, scale)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k not in keep:
                p.copy_(values[k])
    return model


def on_meta(make):
    """Build ``make()`` on the meta device (full-size configurations in no time, no memory)."""
    with torch.device("meta"):
        return make()


def output_fixture(name: str) -> dict:
    """The output fixture ``<name>.pt`` (input, the release's output, seed)."""
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def assert_same_state(model: torch.nn.Module, fx: dict) -> None:
    """``model`` has exactly the key fixture's parameter names and shapes, buffers and parameter count."""
    from irlib.models import count_params

    params, buffers = state_shapes(model)
    assert set(params) == set(fx["params"]), (sorted(set(params) - set(fx["params"]))[:5],
                                              sorted(set(fx["params"]) - set(params))[:5])
    bad = {k: (params[k], fx["params"][k]) for k in params if params[k] != fx["params"][k]}
    assert not bad, list(bad.items())[:5]
    assert buffers == fx["buffers"]
    assert count_params(model) == fx["param_count"]
