"""Release fidelity of IDT, IAT, GridDehazeNet, EfDeRain and the ADM UNet (issue #13).

Each key fixture (``tests/fixtures/release/<name>.json``) was generated once from the release's own model
definition (repository, commit and file in its ``source``): irlib's state_dict must have exactly its keys,
shapes and persistent buffers, so the authors' checkpoints load with ``strict=True``. Each output fixture
(``<name>_small.pt``) holds the release's output on a small config of the same code path with every parameter
filled by :func:`release_fixtures.deterministic_state`; irlib filled the same way must compute it to 1e-5."""
from __future__ import annotations

import pytest
import torch

from irlib.diffloss import ADM_256_UNCOND, ADMConfig, ADMUNet
from irlib.models import count_params
from irlib.models.efderain import EfDeRain
from irlib.models.gridnet import GridDehazeNet
from irlib.models.iat import IAT
from irlib.models.idt import IDT
from release_fixtures import fill, load_keys, state_shapes
from release_fixtures import on_meta as _meta, output_fixture as _output_fixture

# fixture -> (release repository, irlib constructor of the release config, parameter count)
RELEASES = {
    "idt": ("jiexiaou/IDT", IDT, 16_416_463),
    "iat_lol": ("cuiziteng/Illumination-Adaptive-Transformer", IAT, 91_154),
    "griddehazenet": ("proteus1991/GridDehazeNet", GridDehazeNet, 958_051),
    "efderain": ("tsingqguo/efficientderain", EfDeRain, 27_395_406),
    "adm_256_uncond": ("openai/guided-diffusion", lambda: ADMUNet(ADM_256_UNCOND), 552_814_086),
}


def _max_diff(model: torch.nn.Module, fx: dict, *args) -> float:
    model = fill(model, fx["seed"], fx["scale"]).eval()
    with torch.no_grad():
        y = model(fx["input"], *args)
    assert y.shape == fx["output"].shape
    return float((y - fx["output"]).abs().max())


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_state_dict_is_the_release(name):
    repo, make, count = RELEASES[name]
    fx = load_keys(name)
    assert fx["source"]["repo"] == repo and len(fx["source"]["commit"]) == 40
    model = _meta(make)
    params, buffers = state_shapes(model)
    assert set(params) == set(fx["params"]), (sorted(set(params) - set(fx["params"]))[:5],
                                              sorted(set(fx["params"]) - set(params))[:5])
    assert {k: s for k, s in params.items() if s != fx["params"][k]} == {}
    assert buffers == fx["buffers"]
    assert count_params(model) == fx["param_count"] == count


def test_only_iat_has_persistent_buffers_and_they_are_its_batch_norm_statistics():
    for name in RELEASES:
        buffers = load_keys(name)["buffers"]
        if name == "iat_lol":
            assert len(buffers) == 6
            assert {k.rsplit(".", 1)[1] for k in buffers} == {"running_mean", "running_var", "num_batches_tracked"}
        else:  # IDT's relative-position index tables are plain attributes in the release, not buffers
            assert buffers == {}, name


def test_idt_release_stm_order_is_reproduced_by_the_flag_and_the_default_differs():
    fx = _output_fixture("idt_small")
    cfg = fx["config"]
    assert fx["input"].shape[-1] == cfg["img_size"] == 64 and cfg["win_size"] == 8
    assert float((fx["output"] - fx["input"]).std()) > 0.05  # the network's residual is not negligible
    release_order = IDT(img_size=cfg["img_size"], embed_dim=cfg["embed_dim"], code_token_order=True)
    assert release_order.multiple == 64  # a 64x64 input tiles every level's windows, as the release runs it
    assert _max_diff(release_order, fx) <= 1e-5
    # irlib's default folds the STM windows back in place: documented as differing from the release
    default = IDT(img_size=cfg["img_size"], embed_dim=cfg["embed_dim"])
    assert _max_diff(default, fx) > 1e-2
    with pytest.raises(ValueError, match="divisible by 64"):
        default(torch.rand(1, 3, 96, 64))


def test_iat_computes_the_release_output():
    fx = _output_fixture("iat_lol_small")
    assert fx["config"]["type"] == "lol"  # learnable gamma, the LOL model
    out = fx["output"]
    assert bool(((out > 1e-8) & (out < 1)).all())  # the fill leaves every pixel unclamped: the colour path counts
    assert float((out - fx["input"]).std()) > 0.1
    assert _max_diff(IAT(), fx) <= 1e-5


def test_griddehazenet_computes_the_release_output_on_odd_sizes():
    fx = _output_fixture("griddehazenet_small")
    c = fx["config"]
    assert fx["input"].shape[-2] % 4 and fx["input"].shape[-1] % 4  # the transposed convs must hit odd sizes
    model = GridDehazeNet(c["in_channels"], c["depth_rate"], c["height"], c["width"], c["num_dense_layer"],
                          c["growth_rate"], c["stride"], c["attention"])
    assert float(fx["output"].std()) > 0.02
    assert _max_diff(model, fx) <= 1e-5


def test_efderain_computes_the_release_output():
    fx = _output_fixture("efderain_small")
    assert fx["config"]["kernel_size"] == [3] and not fx["config"]["core_bias"]
    model = EfDeRain()
    assert _max_diff(model, fx) <= 1e-5
    with torch.no_grad():
        k = model.kernels(fx["input"])
    assert float(k.std()) > 0.1  # the predicted per-pixel kernels are far from zero: the filtering path counts


def _adm_config(c: dict) -> ADMConfig:
    """irlib's ADMConfig for guided-diffusion ``create_model`` arguments."""
    return ADMConfig(image_size=c["image_size"], model_channels=c["num_channels"], num_res_blocks=c["num_res_blocks"],
                     out_channels=6 if c["learn_sigma"] else 3,
                     attention_resolutions=tuple(int(r) for r in c["attention_resolutions"].split(",")),
                     channel_mult=tuple(int(m) for m in c["channel_mult"].split(",")),
                     num_head_channels=c["num_head_channels"], use_scale_shift_norm=c["use_scale_shift_norm"],
                     resblock_updown=c["resblock_updown"])


def test_adm_release_config_is_irlibs_default():
    c = load_keys("adm_256_uncond")["config"]
    assert c["channel_mult"] == "" and not c["use_fp16"] and not c["class_cond"]
    assert _adm_config({**c, "channel_mult": "1,1,2,2,4,4"}) == ADM_256_UNCOND  # create_model's mult for 256 px


def test_adm_unet_computes_the_release_output():
    fx = _output_fixture("adm_small")
    c = fx["config"]
    assert c["resblock_updown"] and c["use_scale_shift_norm"] and c["learn_sigma"]
    unet = fill(ADMUNet(_adm_config(c)), fx["seed"], fx["scale"]).eval()
    t = fx["t"]
    with torch.no_grad():
        y = unet(fx["input"], t)
        fast = unet(fx["input"], t, emb=unet.time_embeddings(t))  # the stacked timestep projections
        swapped = unet(fx["input"], t.flip(0))
    torch.testing.assert_close(y, fx["output"], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast, fx["output"], atol=1e-5, rtol=0)
    assert float((swapped - y).abs().max()) > 0.1  # the timestep matters at this fill
