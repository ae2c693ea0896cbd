"""Release fidelity of Restormer, NAFNet (+ TLC) and TextPromptIR: irlib's state_dict keys, shapes and persistent
buffers equal the facts taken from each release (tests/fixtures/release/*.json), so the authors' checkpoints load
with ``strict=True``, and with the same parameter values irlib computes the release's outputs (*.pt)."""
from __future__ import annotations

import pytest
import torch

from irlib.models.nafnet import LocalAvgPool2d, NAFNet, NAFNetLocal, local_statistics, tlc_forward
from irlib.models.restormer import TINY, Restormer
from irlib.textprompt import TextPromptIR, eca_kernel, release_unused
from release_fixtures import fill, load_keys, state_shapes
from release_fixtures import on_meta as _meta, assert_same_state as _assert_same_state, output_fixture as _output_fixture


def _check_output(model: torch.nn.Module, fx: dict, **kw) -> None:
    fill(model, scale=fx["scale"]).eval()
    with torch.no_grad():
        y = model(fx["input"], **kw)
    ref = fx["output"]
    assert y.shape == ref.shape
    residual = ref - fx["input"][:, : ref.shape[1]]
    assert float(residual.std()) > 0.01  # the network's contribution is not negligible: the comparison has teeth
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- Restormer
RESTORMER_CFG = {"restormer": {}, "restormer_biasfree": {"ln_bias": False},
                 "restormer_dualpixel": {"in_ch": 6, "dual_pixel": True}}


@pytest.mark.parametrize("name", sorted(RESTORMER_CFG))
def test_restormer_state_dict_is_the_release(name):
    fx = load_keys(name)
    assert fx["source"]["repo"] == "swz30/Restormer"
    _assert_same_state(_meta(lambda: Restormer(**RESTORMER_CFG[name])), fx)


def test_restormer_default_count_is_the_original():
    assert load_keys("restormer")["param_count"] == 26_126_644


@pytest.mark.parametrize("name,extra", [("restormer_small", {}), ("restormer_small_biasfree", {"ln_bias": False}),
                                        ("restormer_small_dualpixel", {"in_ch": 6, "dual_pixel": True})])
def test_restormer_computes_the_release_output(name, extra):
    fx = _output_fixture(name)
    assert fx["config"]["dim"] == TINY["dim"] and fx["config"]["heads"] == list(TINY["heads"])
    _check_output(Restormer(**TINY, **extra), fx)


def test_restormer_release_checkpoint_loads_strictly():
    sd = {k: torch.zeros(s) for k, s in load_keys("restormer")["params"].items()}
    m = _meta(Restormer)
    m.load_state_dict(sd, strict=True, assign=True)
    assert float(m.output.weight.detach().abs().sum()) == 0.0


# --------------------------------------------------------------------------------------------------- NAFNet
def test_nafnet_state_dict_is_the_release_gopro_width32():
    fx = load_keys("nafnet")
    assert fx["config"]["enc_blk_nums"] == [1, 1, 1, 28] and fx["config"]["width"] == 32
    _assert_same_state(_meta(NAFNet), fx)
    _assert_same_state(_meta(NAFNetLocal), fx)  # TLC changes no parameter: the same checkpoint loads
    assert round(fx["param_count"] / 1e6, 2) == 17.11


def _nafnet_small(cls=NAFNet, **kw):
    cfg = _output_fixture("nafnet_small")["config"]
    return cls(cfg["width"], cfg["enc_blk_nums"], cfg["middle_blk_num"], cfg["dec_blk_nums"], **kw)


def test_nafnet_computes_the_release_output_with_padding():
    fx = _output_fixture("nafnet_small")
    assert fx["input"].shape[-1] % 4 and fx["input"].shape[-2] % 4  # exercises the pad-and-crop path
    _check_output(_nafnet_small(), fx)


def test_tlc_kernels_follow_the_release_rule():
    fx = _output_fixture("nafnet_local_small")
    local = _nafnet_small(NAFNetLocal, train_size=tuple(fx["config"]["train_size"][-2:]))
    # the release's pooling layers, in its module order: encoders, decoders, then the middle blocks
    by_level = {id(b): tuple(b.sca[0].kernel) for _, b in local.levels()}
    ours = [by_level[id(b)] for stage in (*local.encoders, *local.decoders, local.middle_blks) for b in stage]
    assert ours == [tuple(k) for k in fx["kernels"]]
    gopro = _meta(NAFNetLocal)  # GoPro: train 256 -> base 384, halved per level
    assert sorted(set(gopro.kernels()), reverse=True) == [(384, 384), (192, 192), (96, 96), (48, 48), (24, 24)]


def test_tlc_computes_the_release_output_for_an_image_larger_than_the_base_size():
    fx = _output_fixture("nafnet_local_small")
    local = _nafnet_small(NAFNetLocal, train_size=tuple(fx["config"]["train_size"][-2:]))
    assert min(fx["input"].shape[-2:]) > local.base_size[0]
    _check_output(local, fx)
    plain = fill(_nafnet_small(), scale=fx["scale"]).eval()
    with torch.no_grad():
        assert (plain(fx["input"]) - fx["output"]).abs().max() > 1e-2  # local statistics change the result


def test_tlc_forward_applies_local_statistics_to_a_plain_nafnet_and_restores_it():
    fx = _output_fixture("nafnet_local_small")
    plain = fill(_nafnet_small(), scale=fx["scale"]).eval()
    plain.tlc_train_size = tuple(fx["config"]["train_size"][-2:])
    with torch.no_grad():
        torch.testing.assert_close(tlc_forward(plain, {"lq": fx["input"]}), fx["output"], atol=1e-5, rtol=1e-5)
    assert all(isinstance(b.sca[0], torch.nn.AdaptiveAvgPool2d) for _, b in plain.levels())
    with pytest.raises(TypeError, match="need a NAFNet"):
        with local_statistics(Restormer(**TINY)):
            pass


def test_tlc_equals_plain_nafnet_up_to_the_base_size():
    plain = fill(_nafnet_small(), seed=3).eval()
    local = fill(_nafnet_small(NAFNetLocal, train_size=(32, 32)), seed=3).eval()
    for hw in ((48, 48), (30, 45), (17, 9)):
        x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(sum(hw)))
        with torch.no_grad():
            torch.testing.assert_close(local(x), plain(x), atol=1e-6, rtol=1e-6)


def test_local_pool_is_the_window_mean_with_replicated_edges():
    x = torch.randn(2, 3, 11, 14, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for kernel in ((5, 6), (11, 4), (20, 3), (4, 30)):
        got = LocalAvgPool2d(kernel)(x)
        kh, kw = min(kernel[0], 11), min(kernel[1], 14)
        # independent reference: an explicit loop over window positions, then nearest-edge indexing
        valid = torch.stack([torch.stack([x[..., i:i + kh, j:j + kw].mean((-2, -1)) for j in range(14 - kw + 1)], -1)
                             for i in range(11 - kh + 1)], -2)
        ri = (torch.arange(11) - (11 - valid.shape[-2]) // 2).clamp(0, valid.shape[-2] - 1)
        rj = (torch.arange(14) - (14 - valid.shape[-1]) // 2).clamp(0, valid.shape[-1] - 1)
        torch.testing.assert_close(got, valid[..., ri, :][..., rj])
    torch.testing.assert_close(LocalAvgPool2d((11, 14))(x), x.mean((-2, -1), keepdim=True))
    assert torch.equal(LocalAvgPool2d((5, 5))(x[..., :1, :1]), x[..., :1, :1])


# ---------------------------------------------------------------------------------------------- TextPromptIR
def test_textpromptir_release_holds_exactly_the_used_parameters():
    fx = load_keys("textpromptir")
    assert fx["release_param_count"] == 123_642_572 and fx["param_count"] == 39_849_408
    rel = _meta(TextPromptIR.release)
    _assert_same_state(rel, fx)
    assert all(release_unused(k) for k in fx["unused"])
    assert not any(release_unused(k) for k in fx["params"])


def test_textpromptir_paper_form_differs_only_where_the_paper_is_explicit():
    fx = load_keys("textpromptir")
    paper = _meta(TextPromptIR)
    params, _ = state_shapes(paper)
    assert set(params) == set(fx["params"])
    diff = {k for k in params if params[k] != fx["params"][k]}
    assert diff == {f"decoder_level3.{i}.attn.temperature" for i in range(6)}  # 4 heads (paper) vs 2 (release)
    assert paper.ffn_residual == "xc" and TextPromptIR.release().ffn_residual == "x"
    assert [eca_kernel(c) for c in (48, 96, 192, 384)] == [3, 3, 5, 5]
    assert paper.encoder_level3[0].attn.fusion.conv.kernel_size == (5,)


def test_textpromptir_release_computes_the_release_output():
    fx = _output_fixture("textpromptir_small")
    cfg = fx["config"]
    m = TextPromptIR.release(blocks=tuple(cfg["num_blocks"]), refine=cfg["num_refinement_blocks"])
    assert sorted(m.state_dict()) == fx["used"]
    _check_output(m, fx, text=fx["text"])
    paper = TextPromptIR(blocks=tuple(cfg["num_blocks"]), refine=cfg["num_refinement_blocks"],
                         decoder_heads=(2, 2, 1, 1))
    fill(paper, scale=fx["scale"]).eval()
    with torch.no_grad():  # the paper's Eq. 7 residual (Xc) is a different network
        assert (paper(fx["input"], text=fx["text"]) - fx["output"]).abs().max() > 1e-3


def _fake_release_checkpoint(fx: dict) -> dict:
    keys = {**fx["params"], **fx["unused"]}
    return {"epoch": 62, "state_dict": {f"net.{k}": torch.zeros(s, device="meta") for k, s in keys.items()}}


def test_textpromptir_release_checkpoint_loader_drops_only_the_unused_keys():
    fx = load_keys("textpromptir")
    ckpt = _fake_release_checkpoint(fx)
    with torch.device("meta"):
        m = TextPromptIR.load_release_checkpoint(ckpt)
    assert m.release_dropped == {k: tuple(s) for k, s in fx["unused"].items()}
    assert sum(torch.Size(s).numel() for s in m.release_dropped.values()) == 123_642_572 - 39_849_408
    ckpt["state_dict"]["net.encoder_level1.0.attn.linear9.weight"] = torch.zeros(1, device="meta")
    with pytest.raises(ValueError, match=r"unexpected keys \['encoder_level1.0.attn.linear9.weight'\]"):
        with torch.device("meta"):
            TextPromptIR.load_release_checkpoint(ckpt)
    del ckpt["state_dict"]["net.encoder_level1.0.attn.linear9.weight"], ckpt["state_dict"]["net.output.weight"]
    with pytest.raises(ValueError, match=r"missing keys \['output.weight'\]"):
        with torch.device("meta"):
            TextPromptIR.load_release_checkpoint(ckpt)


def test_textpromptir_release_checkpoint_file_roundtrip(tmp_path):
    fx = _output_fixture("textpromptir_small")
    cfg = fx["config"]
    kw = dict(blocks=tuple(cfg["num_blocks"]), refine=cfg["num_refinement_blocks"])
    src = fill(TextPromptIR.release(**kw), scale=fx["scale"])
    sd = {f"net.{k}": v for k, v in src.state_dict().items()}
    sd["net.prompt1_1.prompt_param"] = torch.rand(1, 5, 2, 4, 4)            # built but unused by the release
    sd["net.latent.0.ffn.linear1_2.bias"] = torch.zeros(48)                 # another level's W3
    path = tmp_path / "epoch=0-step=1.ckpt"
    torch.save({"state_dict": sd, "epoch": 0, "global_step": 1, "pytorch-lightning_version": "2.1.0"}, path)
    m = TextPromptIR.load_release_checkpoint(path, **kw).eval()
    assert set(m.release_dropped) == {"prompt1_1.prompt_param", "latent.0.ffn.linear1_2.bias"}
    with torch.no_grad():
        torch.testing.assert_close(m(fx["input"], text=fx["text"]), fx["output"], atol=1e-5, rtol=1e-5)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        TextPromptIR.load_release_checkpoint(tmp_path / "junk.ckpt")
