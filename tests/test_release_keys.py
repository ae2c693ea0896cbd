"""Release fidelity of SwinIR, EDSR, FFA-Net, DehazeFormer and MSBDN-DFF, :func:`load_release`, and the
rule that no irlib network registers a module, parameter or buffer twice.

The key fixtures (``tests/fixtures/release/<name>.json``) and output fixtures (``<name>.pt``) were generated
once from each release's own model definition (repository, commit and file in each JSON's ``source``)."""
from __future__ import annotations

import importlib
import inspect
import itertools
import pkgutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import irlib.models
from irlib.models import count_params
from irlib.models.dehazeformer import DehazeFormer, rln_affine_params
from irlib.models.edsr import EDSR, from_edsr_pytorch
from irlib.models.ffanet import FFANet
from irlib.models.msbdn import MSBDN
from irlib.models.release import ReleaseLoadError, load_release, unwrap_state
from irlib.models.swinir import SwinIR, relative_bias_params, shift_mask
from release_fixtures import FIXTURES, fill, load_keys, state_shapes

# fixture -> the irlib constructor that must reproduce the release's state_dict
RELEASE_CONFIGS = {
    "swinir_light_x2": lambda: SwinIR.light(2),
    "swinir_light_x4": lambda: SwinIR.light(4),
    "swinir_classical_x2": lambda: SwinIR.classical(2),
    "swinir_classical_x4": lambda: SwinIR.classical(4),
    "swinir_small_window_rule": lambda: SwinIR(2, dim=12, depths=(2,), heads=(2,), window=8, img_size=4),
    "edsr_mx2": lambda: EDSR.light(2),
    "edsr_mx4": lambda: EDSR.light(4),
    "ffanet": FFANet,
    "dehazeformer_t": DehazeFormer.t,
    "dehazeformer_s": DehazeFormer.s,
    "dehazeformer_b": DehazeFormer.b,
    "dehazeformer_m": DehazeFormer.m,
    "msbdn": MSBDN,
}

_SMALL_DEHAZEFORMER = ((8, 16, 24, 16, 8), (1, 2, 2, 1, 1), (1, 2, 2, 1, 1), (2,) * 5, (0, 0.5, 1, 0, 0))
# output fixture -> the irlib network of the same small config
OUTPUT_CONFIGS = {
    "swinir_small_direct": lambda: SwinIR(2, dim=12, depths=(2, 2), heads=(2, 2), window=4, img_size=16),
    "swinir_small_classical": lambda: SwinIR(4, dim=12, depths=(2,), heads=(3,), window=4, img_size=16,
                                             upsampler="pixelshuffle"),
    "edsr_small": lambda: EDSR(4, 16, 2),
    "edsr_small_x3": lambda: EDSR(3, 16, 2),
    "ffanet_small": lambda: FFANet(3, 1),
    "dehazeformer_small_dwconv": lambda: DehazeFormer(*_SMALL_DEHAZEFORMER, window=4),
    "dehazeformer_small_conv": lambda: DehazeFormer(*_SMALL_DEHAZEFORMER, window=4, conv_type="Conv"),
    "msbdn_small": lambda: MSBDN(16, 1),
}


@pytest.mark.parametrize("name", sorted(RELEASE_CONFIGS))
def test_state_dict_equals_the_release(name):
    fx = load_keys(name)
    with torch.device("meta"):
        model = RELEASE_CONFIGS[name]()
    params, buffers = state_shapes(model)
    assert params == fx["params"]
    assert buffers == fx["buffers"]  # persistent buffers only (relative_position_index, attn_mask, relative_positions)
    assert count_params(model) == fx["param_count"]


@pytest.mark.parametrize("name", sorted(OUTPUT_CONFIGS))
def test_output_equals_the_release_on_a_small_config(name):
    fx = torch.load(FIXTURES / f"{name}.pt")
    model = fill(OUTPUT_CONFIGS[name](), fx["seed"], fx["scale"]).eval()
    with torch.no_grad():
        for x, y in zip(fx["input"], fx["output"]):
            out = model(x)
            assert out.shape == y.shape
            assert torch.allclose(out, y, atol=1e-5, rtol=0), float((out - y).abs().max())


def test_swinir_paper_counts_leave_out_the_relative_position_bias_tables():
    light = {s: SwinIR.light(s) for s in (2, 3, 4)}
    assert {s: count_params(m) for s, m in light.items()} == {2: 910_152, 3: 918_267, 4: 929_628}
    assert {relative_bias_params(m) for m in light.values()} == {24 * 225 * 6}
    paper = {2: 878, 3: 886, 4: 897}  # thousands, as printed in the SwinIR paper
    assert {s: round((count_params(m) - relative_bias_params(m)) / 1e3) for s, m in light.items()} == paper
    assert {s: round(count_params(m) / 1e3) for s, m in light.items()} != paper


def test_swinir_masks_are_stored_for_the_training_size_and_recomputed_for_others():
    torch.manual_seed(0)
    a = SwinIR(2, dim=12, depths=(2,), heads=(2,), window=4, img_size=16).eval()
    blk = a.layers[0].residual_group.blocks[1]
    assert torch.equal(blk.attn_mask, shift_mask(16, 16, 4, 2))
    assert "layers.0.residual_group.blocks.1.attn_mask" in a.state_dict()
    assert "layers.0.residual_group.blocks.0.attn_mask" not in a.state_dict()  # unshifted blocks store none
    assert "mean" not in a.state_dict()  # the release keeps the RGB mean outside the state dict
    # a network trained at 12x20 holds the mask for that size; the 16x16 one must recompute it and agree
    b = SwinIR(2, dim=12, depths=(2,), heads=(2,), window=4, img_size=(12, 20)).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.endswith("attn_mask")}, strict=False)
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-6)
    assert torch.equal(blk._mask((12, 20), "cpu"), b.layers[0].residual_group.blocks[1].attn_mask)


def test_dehazeformer_paper_counts_leave_out_the_rln_affine_parameters():
    nets = {v: getattr(DehazeFormer, v)() for v in "tsb"}
    assert {v: count_params(m) for v, m in nets.items()} == {"t": 687_404, "s": 1_284_884, "b": 2_517_612}
    assert {v: rln_affine_params(m) for v, m in nets.items()} == {"t": 960, "s": 1_632, "b": 3_264}
    paper = {"t": 0.686, "s": 1.283, "b": 2.514}  # millions, as printed in the DehazeFormer paper
    assert {v: round((count_params(m) - rln_affine_params(m)) / 1e6, 3) for v, m in nets.items()} == paper


def test_dehazeformer_signed_io_runs_the_release_convention_on_unit_range_images():
    torch.manual_seed(0)
    plain = DehazeFormer.tiny()
    signed = DehazeFormer.tiny(signed_io=True)
    signed.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.allclose(signed(x), (plain(x * 2 - 1) + 1) / 2, atol=1e-6)


def test_edsr_uses_basicsr_img_range_and_converts_edsr_pytorch_checkpoints():
    torch.manual_seed(0)
    m = EDSR(4, 16, 2)
    assert "mean" not in m.state_dict()
    # an EDSR-PyTorch state dict: names from its src/model/edsr.py and common.py, mean shift as 1x1 convs
    sd = m.state_dict()
    mean = 255 * torch.tensor([0.4488, 0.4371, 0.4040])
    theirs = {"sub_mean.weight": torch.eye(3).view(3, 3, 1, 1), "sub_mean.bias": -mean,
              "add_mean.weight": torch.eye(3).view(3, 3, 1, 1), "add_mean.bias": mean,
              "head.0.weight": sd["conv_first.weight"], "head.0.bias": sd["conv_first.bias"],
              "body.2.weight": sd["conv_after_body.weight"], "body.2.bias": sd["conv_after_body.bias"],
              "tail.1.weight": sd["conv_last.weight"], "tail.1.bias": sd["conv_last.bias"]}
    for i in range(2):
        for j, c in ((0, "conv1"), (2, "conv2")):
            for p in ("weight", "bias"):
                theirs[f"body.{i}.body.{j}.{p}"] = sd[f"body.{i}.{c}.{p}"]
    for j in (0, 2):
        for p in ("weight", "bias"):
            theirs[f"tail.0.{j}.{p}"] = sd[f"upsample.{j}.{p}"]
    other = load_release(EDSR(4, 16, 2), theirs, convert=from_edsr_pytorch)
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        assert torch.equal(other(x), m(x))
    theirs["sub_mean.bias"] = -mean / 255  # a [0, 1]-range mean shift is not what EDSR(img_range=255) computes
    with pytest.raises(ValueError, match="sub_mean is not the standard mean shift"):
        from_edsr_pytorch(theirs)


def test_msbdn_fusion_lists_are_registered_once():
    m = MSBDN.tiny()
    names = [n for n, _ in m.named_parameters(remove_duplicate=False)]
    assert len(names) == len(set(p for _, p in m.named_parameters())) == len(m.state_dict())
    assert not any("to_prev" in n or ".back." in n for n in m.state_dict())


# ------------------------------------------------------------------ no module registered twice

def _constructible(cls: type) -> bool:
    """Buildable with its defaults and without fetching pretrained weights (those get explicit entries below)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.name in ("pretrained", "weights") and p.default not in (False, None) for p in params):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def _irlib_networks():
    """(label, builder) for every public nn.Module class of irlib.models with a default and/or tiny config,
    plus small DINO-IR, TextPromptIR and ADM UNet configs."""
    from irlib.diffloss import ADM_TINY, ADMUNet
    from irlib.dinoir import DINOIR, DINOFeatures
    from irlib.models.classifiers import ResNetFeatures
    from irlib.models.restormer import TINY
    from irlib.textprompt import TextPromptIR

    out = []
    for info in pkgutil.iter_modules(irlib.models.__path__):
        mod = importlib.import_module(f"irlib.models.{info.name}")
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__ or name.startswith("_") or not issubclass(cls, nn.Module):
                continue
            if _constructible(cls):
                out.append((f"{info.name}.{name}()", cls))
            if callable(getattr(cls, "tiny", None)):
                out.append((f"{info.name}.{name}.tiny()", cls.tiny))
    dino = lambda: DINOFeatures(pretrained=False, tiny=True, img_size=56)  # noqa: E731
    out += [("dinoir.DINOFeatures(tiny)", dino), ("dinoir.DINOIR(tiny)", lambda: DINOIR(dino(), **TINY)),
            ("textprompt.TextPromptIR(tiny)", lambda: TextPromptIR(text_dim=12, **TINY)),
            ("diffloss.ADMUNet(ADM_TINY)", lambda: ADMUNet(ADM_TINY)),
            ("classifiers.ResNetFeatures(random)", lambda: ResNetFeatures(weights=None))]
    return out


def _build(make):
    try:
        with torch.device("meta"):  # default configs of big networks build in no time on the meta device
            return make()
    except (NotImplementedError, RuntimeError):  # some constructors compute with tensors (e.g. .item())
        return make()


def _aliases(pairs) -> list[tuple[str, str]]:
    seen: dict[int, str] = {}
    dup = []
    for name, obj in pairs:
        if id(obj) in seen:
            dup.append((seen[id(obj)], name))
        else:
            seen[id(obj)] = name
    return dup


def test_the_network_list_covers_every_model_module():
    labels = [label for label, _ in _irlib_networks()]
    # release (checkpoint conversion), zoo (constructors by name) and deform (an operator) hold no network
    files = {p.stem for p in Path(irlib.models.__file__).parent.glob("*.py")} - {"__init__", "release", "zoo", "deform"}
    assert files <= {label.split(".")[0] for label in labels}
    for want in ("msbdn.MSBDN()", "swinir.SwinIR()", "dehazeformer.DehazeFormer.tiny()", "dinoir.DINOIR(tiny)"):
        assert want in labels


@pytest.mark.parametrize("label,make", _irlib_networks(), ids=lambda v: v if isinstance(v, str) else "")
def test_no_module_parameter_or_buffer_is_reachable_under_two_names(label, make):
    model = _build(make)
    tensors = itertools.chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    assert _aliases(tensors) == [], label
    assert _aliases(model.named_modules(remove_duplicate=False)) == [], label


# ------------------------------------------------------------------ load_release

def _small() -> nn.Module:
    torch.manual_seed(0)
    return SwinIR.tiny(2)


def _equal_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrap", ["bare", "params", "params_ema", "state_dict", "model+module", "net", "module obj"])
def test_load_release_unwraps_every_container(tmp_path, wrap):
    src = _small()
    sd = src.state_dict()
    obj = {"bare": sd, "params": {"params": sd}, "params_ema": {"params_ema": sd},
           "state_dict": {"state_dict": sd, "epoch": 3},
           "model+module": {"model": {f"module.{k}": v for k, v in sd.items()}, "step": 10},
           "net": {"net": sd}, "module obj": src}[wrap]
    dst = SwinIR.tiny(2)
    assert not _equal_state(dst, src)
    if wrap == "module obj":
        load_release(dst, obj)
    else:
        torch.save(obj, tmp_path / "w.pth")
        assert load_release(dst, tmp_path / "w.pth") is dst
    assert _equal_state(dst, src)


def test_load_release_prefers_params_ema_and_can_be_told_otherwise():
    a, b = _small(), SwinIR.tiny(2)
    both = {"params": b.state_dict(), "params_ema": a.state_dict()}
    state, how = unwrap_state(both)
    assert how == "params_ema" and all(torch.equal(state[k], v) for k, v in a.state_dict().items())
    assert _equal_state(load_release(SwinIR.tiny(2), both), a)
    assert _equal_state(load_release(SwinIR.tiny(2), both, key="params"), b)


def test_load_release_names_missing_unexpected_and_misshapen_keys(tmp_path):
    sd = _small().state_dict()
    bad = {"extra.weight": torch.zeros(1), **{k.replace("mlp.fc1", "mlp.0"): v for k, v in sd.items()}}
    path = tmp_path / "wrong.pth"
    torch.save({"params": bad}, path)
    with pytest.raises(ReleaseLoadError) as e:
        load_release(SwinIR.tiny(2), path)
    msg = str(e.value)
    n = sum("mlp.fc1" in k for k in sd)
    assert str(path) in msg and f"{n} missing keys" in msg and f"{n + 1} unexpected keys" in msg
    assert "layers.0.residual_group.blocks.0.mlp.fc1.weight" in msg and "extra.weight" in msg
    other = SwinIR.tiny(4).state_dict()  # the x4 upsampler conv has other shapes
    with pytest.raises(ReleaseLoadError, match=r"2 keys with other shapes .*upsample\.0\.weight"):
        load_release(SwinIR.tiny(2), other)
    # strict=False accepts missing/unexpected keys but never other shapes
    partial = {k: v for k, v in sd.items() if "layers.1" not in k}
    load_release(SwinIR.tiny(2), partial, strict=False)
    with pytest.raises(ReleaseLoadError, match="missing keys"):
        load_release(SwinIR.tiny(2), partial)


def test_load_release_refuses_pickled_objects_and_reports_unknown_containers(tmp_path):
    path = tmp_path / "whole.pkl"
    torch.save(_small(), path)  # what torch.save(model) writes (MSBDN's release)
    with pytest.raises(ReleaseLoadError, match="pickles Python objects"):
        load_release(SwinIR.tiny(2), path)
    assert _equal_state(load_release(SwinIR.tiny(2), path, trust_pickle=True), _small())
    with pytest.raises(ReleaseLoadError, match="top-level keys are: weights, step"):
        load_release(SwinIR.tiny(2), {"weights": {"a": {}}, "step": 1})
    with pytest.raises(ReleaseLoadError, match="not found"):
        load_release(SwinIR.tiny(2), tmp_path / "nope.pth")
