"""Release fidelity of DINO-IR's Table 1 comparison networks DnCNN (cszn/KAIR), MPRNet (swz30/MPRNet) and
PromptIR (va1shn9v/PromptIR): irlib's state_dict keys, shapes and persistent buffers equal the facts taken
from each release (tests/fixtures/release/*.json, repo and commit in each ``source``), released checkpoints
load with ``strict=True``, and with the same parameter values irlib computes the release's outputs (*.pt)."""
from __future__ import annotations

import pytest
import torch

from irlib.models import count_params, zoo
from irlib.models.dncnn import DnCNN
from irlib.models.mprnet import MPRNet, SharedPReLU
from irlib.models.promptir import PromptIR
from release_fixtures import deterministic_state, fill, load_keys, state_shapes
from release_fixtures import on_meta as _meta, output_fixture as _output_fixture

RELEASES = {
    "dncnn_color_blind": ("cszn/KAIR", DnCNN.color_blind),
    "dncnn_color_17": ("cszn/KAIR", DnCNN.color_s),
    "dncnn_gray_17": ("cszn/KAIR", DnCNN.gray),
    "dncnn_color_blind_merged": ("cszn/KAIR", lambda: DnCNN.color_blind(act_mode="R")),
    "mprnet_deraining": ("swz30/MPRNet", MPRNet.deraining),
    "mprnet_denoising": ("swz30/MPRNet", MPRNet.denoising),
    "mprnet_deblurring": ("swz30/MPRNet", MPRNet.deblurring),
    "promptir": ("va1shn9v/PromptIR", PromptIR),
}


# ------------------------------------------------------------------------------------------ keys and shapes
@pytest.mark.parametrize("name", sorted(RELEASES))
def test_state_dict_is_the_release(name):
    repo, make = RELEASES[name]
    fx = load_keys(name)
    assert fx["source"]["repo"] == repo and len(fx["source"]["commit"]) == 40
    model = _meta(make)
    params, buffers = state_shapes(model)
    assert set(params) == set(fx["params"]), (sorted(set(params) ^ set(fx["params"]))[:5])
    bad = {k: (params[k], fx["params"][k]) for k in params if params[k] != fx["params"][k]}
    assert not bad, list(bad.items())[:5]
    assert buffers == fx["buffers"]
    assert count_params(model) == fx["param_count"]


def test_release_sizes_are_the_published_ones():
    counts = {n: load_keys(n)["param_count"] for n in RELEASES}
    assert round(counts["mprnet_deraining"] / 1e6, 1) == 3.6      # MPRNet paper, deraining
    assert round(counts["mprnet_deblurring"] / 1e6, 1) == 20.1    # MPRNet paper, deblurring
    assert round(counts["promptir"] / 1e6, 1) == 35.6             # PromptIR paper
    # DnCNN: 64*3*9+64 head, (nb-2) x (64*64*9+64 conv + 128 BN), 3*64*9+3 tail
    body = 64 * 64 * 9 + 64 + 128
    assert counts["dncnn_color_blind"] == 64 * 27 + 64 + 18 * body + 3 * 576 + 3
    assert counts["dncnn_color_blind"] - counts["dncnn_color_blind_merged"] == 18 * 128


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_a_checkpoint_with_the_release_keys_loads_strictly(name):
    fx = load_keys(name)
    sd = {k: torch.zeros(s) for k, s in {**fx["params"], **fx["buffers"]}.items()}
    model = _meta(RELEASES[name][1])
    model.load_state_dict(sd, strict=True, assign=True)
    assert all(float(p.detach().abs().sum()) == 0.0 for p in model.parameters())
    first = next(iter(fx["params"]))
    with pytest.raises(RuntimeError, match="Missing key"):
        _meta(RELEASES[name][1]).load_state_dict({k: v for k, v in sd.items() if k != first}, assign=True)
    wrong = dict(sd)
    wrong[first] = torch.zeros(*sd[first].shape[:-1], sd[first].shape[-1] + 1)
    with pytest.raises(RuntimeError, match="size mismatch"):
        _meta(RELEASES[name][1]).load_state_dict(wrong, assign=True)


# --------------------------------------------------------------------------------------------------- DnCNN
def _dncnn_small() -> tuple[DnCNN, dict]:
    fx = _output_fixture("dncnn_small")
    assert fx["source"]["repo"] == "cszn/KAIR"
    m = fill(DnCNN(**fx["config"]), fx["seed"], fx["scale"])
    m.load_state_dict({**m.state_dict(), **fx["buffers"]})
    return m, fx


def test_dncnn_computes_the_release_output_with_running_statistics():
    m, fx = _dncnn_small()
    assert float((fx["output"] - fx["input"]).std()) > 0.01
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(fx["input"]), fx["output"], atol=1e-5, rtol=1e-5)


def test_dncnn_trains_with_kair_batch_norm_momentum_and_eps():
    m, fx = _dncnn_small()
    with torch.no_grad():
        torch.testing.assert_close(m.train()(fx["input"]), fx["train_output"], atol=1e-5, rtol=1e-5)
    sd = m.state_dict()
    for k, v in fx["buffers_after_train_step"].items():
        torch.testing.assert_close(sd[k].to(v.dtype), v, atol=1e-6, rtol=1e-6)
    bn = m.model[3]
    assert (bn.momentum, bn.eps) == (0.9, 1e-4)
    # independent reference for one running-mean update: 10% old value, 90% the batch mean
    x = torch.randn(4, 16, 5, 6)
    ref = DnCNN.tiny().model[3]
    old = ref.running_mean.clone()
    ref.train()(x)
    torch.testing.assert_close(ref.running_mean, 0.1 * old + 0.9 * x.mean(dim=(0, 2, 3)))


def test_dncnn_merge_bn_is_the_released_form_and_computes_the_same():
    m, fx = _dncnn_small()
    merged = m.eval().merge_bn().eval()
    assert merged.act_mode == "R" and not any(isinstance(b, torch.nn.BatchNorm2d) for b in merged.model)
    assert set(merged.state_dict()) == {f"model.{i}.{p}" for i in range(0, 2 * fx["config"]["nb"], 2)
                                        for p in ("weight", "bias")}
    with torch.no_grad():
        torch.testing.assert_close(merged(fx["input"]), fx["output"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="batch norms"):
        merged.merge_bn()
    with pytest.raises(ValueError, match="act_mode"):
        DnCNN(act_mode="BX")


# -------------------------------------------------------------------------------------------------- MPRNet
def test_mprnet_computes_the_release_outputs_of_all_three_stages():
    fx = _output_fixture("mprnet_small")
    assert fx["source"]["path"] == "Deraining/MPRNet.py"
    m = fill(MPRNet(**fx["config"]), fx["seed"], fx["scale"]).eval()
    with torch.no_grad():
        outs = m(fx["input"])
        restored = m.restore(fx["input"])
    assert len(outs) == 3
    assert float((fx["output"] - fx["input"]).std()) > 0.01
    for got, ref in zip(outs, fx["stages"]):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(restored, fx["output"], atol=1e-5, rtol=1e-5)


def test_mprnet_has_one_prelu_slope_written_under_every_release_name():
    m = MPRNet.tiny()
    slopes = [k for k, p in m.named_parameters() if p.numel() == 1]
    assert slopes == ["shallow_feat1.1.body.1.weight"]
    views = [k for k, mod in m.named_modules() if isinstance(mod, SharedPReLU)]
    sd = m.state_dict()
    assert len(views) > 10 and all(torch.equal(sd[f"{k}.weight"], sd[slopes[0]]) for k in views)
    # the single slope receives the gradient of every block that uses it
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        m.shallow_feat1[1].body[1].weight.fill_(0.3)
    sum(o.sum() for o in m(x)).backward()
    assert float(m.shallow_feat1[1].body[1].weight.grad.abs()) > 0


def test_mprnet_state_dict_roundtrip_and_inconsistent_copies_are_refused():
    torch.manual_seed(0)
    a, b = MPRNet.tiny(), MPRNet.tiny()
    with torch.no_grad():
        a.shallow_feat1[1].body[1].weight.fill_(0.17)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(a(x), b(x)))
    assert float(b.stage3_orsnet.orb3.body[0].body[1].act.weight.detach()) == pytest.approx(0.17)
    sd = a.state_dict()
    key = "stage2_decoder.skip_attn1.body.1.weight"
    sd[key] = sd[key] + 0.5
    with pytest.raises(RuntimeError, match="differs from the shared PReLU slope"):
        MPRNet.tiny().load_state_dict(sd)
    del sd[key]
    with pytest.raises(RuntimeError, match=f"Missing key.*{key}"):
        MPRNet.tiny().load_state_dict(sd)


def test_mprnet_needs_sizes_divisible_by_8():
    with pytest.raises(ValueError, match="divisible by 8"):
        MPRNet.tiny()(torch.rand(1, 3, 16, 20))


# ------------------------------------------------------------------------------------------------ PromptIR
def test_promptir_computes_the_release_output():
    fx = _output_fixture("promptir_small")
    cfg = fx["config"]
    assert cfg["decoder"] and cfg["dim"] == 48 and fx["input"].shape[0] == 2  # batch of 2: per-sample prompts
    m = PromptIR(dim=cfg["dim"], num_blocks=cfg["num_blocks"], num_refinement_blocks=cfg["num_refinement_blocks"],
                 heads=cfg["heads"])
    fill(m, fx["seed"], fx["scale"]).eval()
    assert float((fx["output"] - fx["input"]).std()) > 0.01
    with torch.no_grad():
        torch.testing.assert_close(m(fx["input"]), fx["output"], atol=1e-5, rtol=1e-5)


def test_promptir_prompt_is_a_softmax_mix_of_the_learned_prompts():
    from irlib.models.promptir import PromptGenBlock

    blk = PromptGenBlock(prompt_dim=4, prompt_len=3, prompt_size=6, lin_dim=5)
    x = torch.randn(2, 5, 6, 6)
    with torch.no_grad():
        blk.conv3x3.weight.zero_()
        blk.conv3x3.weight[:, :, 1, 1] = torch.eye(4)  # identity conv: the mixed prompt itself
        w = torch.softmax(blk.linear_layer(x.mean((-2, -1))), 1)
        ref = torch.stack([sum(w[b, i] * blk.prompt_param[0, i] for i in range(3)) for b in range(2)])
        torch.testing.assert_close(blk(x), ref, atol=1e-6, rtol=1e-6)


def test_promptir_leftover_modules_take_no_part_in_the_forward():
    m = PromptIR.tiny()
    m(torch.rand(2, 3, 16, 24)).mean().backward()
    unused = {k for k, p in m.named_parameters() if p.grad is None}
    assert unused == {f"chnl_reduce{i}.weight" for i in (1, 2, 3)} | {f"reduce_noise_channel_{i}.weight"
                                                                          for i in (1, 2, 3)}
    fx = load_keys("promptir")
    assert sum(torch.Size(s).numel() for k, s in fx["params"].items() if k.split(".")[0] in
               {k.split(".")[0] for k in unused}) == 215_296


# ------------------------------------------------------------------------------------------- tiny and zoo
@pytest.mark.parametrize("cls", [DnCNN, MPRNet, PromptIR], ids=lambda c: c.__name__)
def test_tiny_forward_shape_and_gradients(cls):
    torch.manual_seed(0)
    m = cls.tiny()
    assert count_params(m) < 400_000
    x = torch.rand(2, 3, 16, 24, requires_grad=True)
    out = m(x)
    outs = out if isinstance(out, list) else [out]
    assert all(o.shape == x.shape for o in outs)
    sum(o.square().mean() for o in outs).backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    grads = [p.grad for k, p in m.named_parameters() if not k.startswith(("chnl_reduce", "reduce_noise_channel"))]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("net,cls,fixture,pad", [("DnCNN", DnCNN, "dncnn_color_blind", 1),
                                                 ("MPRNet", MPRNet, "mprnet_deraining", 8),
                                                 ("PromptIR", PromptIR, "promptir", 8)])
def test_zoo_builds_the_release_size_and_a_tiny_size(net, cls, fixture, pad):
    e = zoo.entry(net)
    assert "DINO-IR" in e.note and zoo.pad(net) == pad and zoo.pad(net, "tiny") == pad
    with torch.device("meta"):
        full = zoo.create(net)
    assert type(full) is cls and count_params(full) == load_keys(fixture)["param_count"]
    tiny = zoo.create(net, size="tiny")
    assert type(tiny) is cls and count_params(tiny) == count_params(cls.tiny())
    with pytest.raises(ValueError, match="takes no SR scale"):
        zoo.create(net, size="tiny", scale=2)


def test_fixture_values_are_reproducible_from_the_seed():
    fx = _output_fixture("dncnn_small")
    shapes = {k: list(v.shape) for k, v in fx["buffers"].items() if k.endswith("running_mean")}
    for k, v in deterministic_state(shapes, fx["seed"], fx["scale"]).items():
        assert torch.equal(v, fx["buffers"][k])
