"""Release fidelity of DA-CLIP's universal restorer (IR-SDE ConditionalUNet + IRSDE, irlib.models.irsde) and of
the DA-CLIP controller (irlib.models.daclip), against facts generated from Algolzw/daclip-uir
(tests/fixtures/release/irsde_*, daclip_*): state_dict keys and shapes, outputs with the same parameter values,
the SDE's schedule and step numbers, strict loading, and a tiny training step."""
from __future__ import annotations

import pytest
import torch

from irlib.models import count_params
from irlib.models.irsde import ConditionalUNet, IRSDE, theta_schedule
from release_fixtures import FIXTURES, fill, load_keys, state_shapes
from release_fixtures import on_meta as _meta, assert_same_state as _same_state, output_fixture as _pt

COMMIT = "c2cc14146faac85680b4cb39ece4ef9e2a7c7c24"


# ------------------------------------------------------------------------------------------ IR-SDE U-Net
def test_unet_state_dict_is_the_release_universal_model():
    fx = load_keys("irsde_unet")
    assert fx["source"]["repo"] == "Algolzw/daclip-uir" and fx["source"]["commit"] == COMMIT
    assert fx["config"] == dict(in_nc=3, out_nc=3, nf=64, ch_mult=[1, 2, 4, 8], context_dim=512,
                                use_degra_context=True, use_image_context=True)
    _same_state(_meta(lambda: ConditionalUNet(**fx["config"])), fx)
    assert fx["param_count"] == 48_975_747


def test_unet_defaults_are_the_option_file():
    fx = load_keys("irsde_unet")
    _same_state(_meta(ConditionalUNet), fx)


def test_unet_release_checkpoint_loads_strictly_and_rejects_a_plain_irsde_file():
    fx = load_keys("irsde_unet")
    sd = {k: torch.full(s, 0.5) for k, s in fx["params"].items()}
    m = _meta(ConditionalUNet)
    m.load_state_dict(sd, strict=True, assign=True)
    assert float(m.prompt.detach().mean()) == 0.5
    plain = {k: v for k, v in sd.items() if not k.startswith(("prompt", "text_mlp"))}
    with pytest.raises(RuntimeError, match="Missing key"):
        _meta(ConditionalUNet).load_state_dict(plain, strict=True, assign=True)


@pytest.mark.parametrize("name", ["irsde_unet_small", "irsde_unet_small_noctx"])
def test_unet_computes_the_release_output(name):
    fx = _pt(name)
    m = fill(ConditionalUNet(**fx["config"]), scale=fx["scale"]).eval()
    if name == "irsde_unet_small":  # 20 x 12: the reflect padding to a multiple of 16 is exercised
        assert fx["xt"].shape[-2] % 16 and fx["xt"].shape[-1] % 16
    with torch.no_grad():
        y = m(fx["xt"], fx["cond"], fx["time"], text_context=fx.get("text_context"),
              image_context=fx.get("image_context"))
    assert y.shape == fx["output"].shape and float(fx["output"].std()) > 0.05
    torch.testing.assert_close(y, fx["output"], atol=1e-5, rtol=1e-5)


def test_unet_contexts_change_the_output():
    fx = _pt("irsde_unet_small")
    m = fill(ConditionalUNet(**fx["config"]), scale=fx["scale"]).eval()
    args = (fx["xt"], fx["cond"], fx["time"])
    with torch.no_grad():
        full = m(*args, text_context=fx["text_context"], image_context=fx["image_context"])
        other_img = m(*args, text_context=fx["text_context"], image_context=fx["image_context"].flip(0))
        no_txt = m(*args, image_context=fx["image_context"])
    assert float((full - other_img).abs().max()) > 1e-4
    assert float((full - no_txt).abs().max()) > 1e-4


def test_unet_rejects_levels_narrower_than_a_head():
    with pytest.raises(ValueError, match="32 channels"):
        ConditionalUNet(nf=16)


def test_unet_tiny_trains_one_step_with_the_release_loss():
    torch.manual_seed(0)
    m = ConditionalUNet.tiny()
    sde = IRSDE(max_sigma=50, T=100)
    gt, lq = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    tc, ic = torch.randn(2, 24), torch.randn(2, 24)
    sde.set_mu(lq)
    t = torch.tensor([5, 80]).view(2, 1, 1, 1)
    xt = sde.noisy_state(gt, t)
    loss = sde.training_loss(m(xt, lq, t.squeeze(), text_context=tc, image_context=ic), xt, gt, t)
    loss.backward()
    grads = {k: p.grad for k, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # zero-initialised cross-attention output still receives gradient (it is what training moves first)
    assert float(grads["mid_attn.fn.fn.proj_out.weight"].abs().sum()) > 0
    assert float(grads["prompt"].abs().sum()) > 0 and float(grads["text_mlp.0.weight"].abs().sum()) > 0


# --------------------------------------------------------------------------------------------------- SDE
@pytest.fixture(scope="module")
def sde_facts() -> dict:
    return _pt("irsde_sde")


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_sde_schedule_is_the_release(sde_facts, schedule):
    ref = sde_facts[schedule]
    s = IRSDE(max_sigma=50, T=100, schedule=schedule, eps=0.005)
    assert s.max_sigma == pytest.approx(ref["max_sigma"]) == pytest.approx(50 / 255)
    for k in ("thetas", "sigmas", "thetas_cumsum", "sigma_bars"):
        torch.testing.assert_close(getattr(s, k), ref[k], atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(s.dt, ref["dt"].to(s.dt.dtype), atol=0, rtol=1e-6)
    assert s.thetas.shape == (101,) and float(s.thetas_cumsum[0]) == 0.0
    # the terminal mean keeps eps of x0 - mu, and sigma_bar(T) is max_sigma * sqrt(1 - eps^2)
    assert float(torch.exp(-s.thetas_cumsum[-1] * s.dt)) == pytest.approx(0.005, rel=1e-5)
    assert float(s.sigma_bars[-1]) == pytest.approx(50 / 255 * (1 - 0.005 ** 2) ** 0.5, rel=1e-5)


def test_sde_cosine_thetas_are_the_truncated_cosine_betas():
    th = theta_schedule("cosine", 10)
    import math
    f = [math.cos(((i / 12) + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(13)]
    expect = [1 - f[i] / f[0] for i in range(1, 12)]
    torch.testing.assert_close(th, torch.tensor(expect), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown theta schedule"):
        theta_schedule("sigmoid", 10)


def test_sde_steps_are_the_release(sde_facts):
    f = sde_facts["steps"]
    s = IRSDE(max_sigma=50, T=100, schedule="cosine", eps=0.005)
    s.set_mu(f["mu"])
    t = f["t"]
    close = dict(atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(s.mu_bar(f["x0"], t), f["mu_bar"], **close)
    torch.testing.assert_close(s.sigma_bar(t), f["sigma_bar"], **close)
    score = s.score_from_noise(f["noise_pred"], t)
    torch.testing.assert_close(score, f["score"], **close)
    torch.testing.assert_close(s.x0_from_noise(f["xt"], f["noise_pred"], t), f["init_state"], **close)
    torch.testing.assert_close(s.noise_from_states(f["xt"], f["x0"], t), f["real_noise"], **close)
    torch.testing.assert_close(s.reverse_optimum_step(f["xt"], f["x0"], t), f["optimum_step"], **close)
    torch.testing.assert_close(s.reverse_optimum_std(t), f["optimum_std"], **close)
    torch.testing.assert_close(s.reverse_sde_step_mean(f["xt"], score, t), f["sde_step_mean"], **close)
    torch.testing.assert_close(s.reverse_ode_step(f["xt"], score, t), f["ode_step"], **close)
    torch.testing.assert_close(s.reverse_sde_step(f["xt"], score, t, z=f["sde_step_z"]), f["sde_step"], **close)
    torch.testing.assert_close(s.reverse_posterior_step(f["xt"], f["noise_pred"], t, z=f["posterior_step_z"]),
                               f["posterior_step"], **close)
    ts = f["random_states_t"]
    torch.testing.assert_close(s.noisy_state(f["x0"], ts, z=f["random_states_z"]), f["random_states"], **close)
    torch.testing.assert_close(s.reverse_optimum_std(1), sde_facts["optimum_std_1"], **close)
    torch.testing.assert_close(s.reverse_optimum_std(100), sde_facts["optimum_std_T"], **close)


def test_sde_noise_round_trip_and_perfect_noise_gives_the_optimum():
    s = IRSDE(max_sigma=50, T=100)
    g = torch.Generator().manual_seed(0)
    x0, mu = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    s.set_mu(mu)
    t = torch.tensor([10, 60]).view(2, 1, 1, 1)
    z = torch.randn(2, 3, 8, 8, generator=g)
    xt = s.noisy_state(x0, t, z=z)
    torch.testing.assert_close(s.noise_from_states(xt, x0, t), z, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s.x0_from_noise(xt, z, t), x0, atol=1e-4, rtol=1e-4)
    # the true noise makes the posterior mean the optimum step exactly
    mean = s.reverse_posterior_step(xt, z, t, z=torch.zeros_like(xt))
    torch.testing.assert_close(mean, s.reverse_optimum_step(xt, x0, t), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["posterior", "sde"])
def test_sde_sampler_is_the_release_loop(mode):
    """Whole sampling loops (noise_state + T reverse steps) of the release with its global RNG seeded equal
    irlib's with a generator seeded the same (the same CPU normal stream, drawn in the same order)."""
    fx = _pt("irsde_sample_small")
    m = fill(ConditionalUNet(**fx["config"]), scale=fx["scale"]).eval()
    y = IRSDE(**fx["sde"]).sample(m, fx["lq"], mode=mode, generator_seed=fx["seed"],
                                  text_context=fx["text_context"], image_context=fx["image_context"])
    ref = fx["output"][mode]
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-5)
    wrong = IRSDE(**fx["sde"]).sample(m, fx["lq"], mode=mode, generator_seed=fx["seed"] + 1,
                                      text_context=fx["text_context"], image_context=fx["image_context"])
    assert float((wrong - ref).abs().max()) > 1e-2


def test_sde_sampler_runs_and_is_seeded():
    torch.manual_seed(0)
    m = ConditionalUNet.tiny(context_dim=None).eval()
    s = IRSDE(max_sigma=50, T=4)
    lq = torch.rand(1, 3, 16, 16)
    a = s.sample(m, lq, generator_seed=3)
    b = s.sample(m, lq, generator_seed=3)
    c = s.sample(m, lq, mode="sde", generator_seed=3)
    assert a.shape == lq.shape and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="mode"):
        s.sample(m, lq, mode="ode")


# ------------------------------------------------------------------------------------------------ DA-CLIP
from irlib.models.daclip import CLIP, DACLIPRestorer, DaCLIP, clip_preprocess, daclip_state_from_clip, load_daclip  # noqa: E402
from irlib.models.release import ReleaseLoadError  # noqa: E402
from release_fixtures import deterministic_state  # noqa: E402


def _fill_all(m: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Fill every state-dict key with its :func:`deterministic_state` value, as the fixture generator filled the
    release's DaCLIP. There ``clip.visual`` and ``visual`` are one module loaded twice, ``visual.*`` last, so the
    shared tower ends up with the ``visual.*`` values: both names get those here."""
    shapes = {k: list(v.shape) for k, v in m.state_dict().items()}
    vals = deterministic_state(shapes, seed, scale)
    for k in shapes:
        if k.startswith("clip.visual."):
            vals[k] = vals[k[len("clip."):]]
    m.load_state_dict(vals, strict=True)
    return m


def _meta_state(keys: dict) -> dict:
    return {k: torch.zeros(s, device="meta") for k, s in keys.items()}


def test_daclip_state_dict_is_the_release_vit_b32():
    fx = load_keys("daclip_vit_b32")
    assert fx["source"]["repo"] == "Algolzw/daclip-uir" and fx["source"]["commit"] == COMMIT
    m = _meta(DaCLIP.vit_b_32)
    sd = m.state_dict()
    assert list(sd) == fx["state_dict_keys"]            # same keys, same order (shared tower listed twice)
    assert {k: list(v.shape) for k, v in sd.items()} == fx["params"] and fx["buffers"] == {}
    assert count_params(m) == fx["param_count"] == 246_213_634
    ctrl = [k for k in sd if k.startswith("visual_control.")]
    zero = [k for k in ctrl if ".zero_modules." in k]
    assert len(zero) == 24 and fx["params"]["visual_control.transformer.zero_modules.11.weight"] == [768, 768]
    assert "visual_control.transformer.transformer.resblocks.0.attn.in_proj_weight" in ctrl


def test_clip_state_dict_is_open_clip_vit_b32():
    fx = load_keys("clip_vit_b32")
    m = _meta(CLIP.vit_b_32)
    params, buffers = state_shapes(m)
    assert params == fx["params"] and buffers == fx["buffers"] == {}
    assert count_params(m) == fx["param_count"]
    assert "attn_mask" not in m.state_dict() and m.attn_mask.shape == (77, 77)


def test_daclip_zero_projections_start_at_zero_and_clip_locks():
    m = DaCLIP.tiny()
    for z in m.visual_control.transformer.zero_modules:
        assert not z.weight.detach().any() and not z.bias.detach().any()
    assert m.visual is m.clip.visual
    m.lock_clip()
    assert not any(p.requires_grad for p in m.clip.parameters())
    assert all(p.requires_grad for p in m.controller_parameters())


def test_daclip_computes_the_release_outputs():
    fx = _pt("daclip_small")
    m = _fill_all(DaCLIP(CLIP(**fx["config"])), scale=fx["scale"]).eval()
    with torch.no_grad():
        feats, degra = m.encode_image(fx["image"], control=True)
        plain = m.encode_image(fx["image"])
        text = m.encode_text(fx["text"])
        out = m(image=fx["image"], text=torch.cat([fx["text"], fx["text"].flip(0)], dim=-1))
    # the controller changes the frozen encoder's output: the comparison has teeth
    assert float((fx["image_features"] - fx["plain_image_features"]).abs().max()) > 0.01
    for got, key in ((feats, "image_features"), (degra, "degra_features"), (plain, "plain_image_features"),
                     (text, "text_features")):
        torch.testing.assert_close(got, fx[key], atol=1e-5, rtol=1e-5)
    for k, v in fx["forward"].items():
        torch.testing.assert_close(out[k], v, atol=1e-5, rtol=1e-5)


def test_daclip_hidden_states_enter_in_reverse_order():
    m = _fill_all(DaCLIP.tiny()).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    vc = m.visual_control
    with torch.no_grad():
        _, hiddens = vc.transformer(vc.tokens(x))
        feats, _ = m.encode_image(x, control=True)
        assert torch.equal(feats, m.clip.visual(x, control=hiddens))
        in_order = m.clip.visual(x, control=hiddens[::-1])
    assert float((feats - in_order).abs().max()) > 1e-4
    with pytest.raises(ValueError, match="one tensor per block"):
        m.clip.visual(x, control=hiddens[:1])


def test_release_daclip_checkpoint_loads_strictly():
    keys = load_keys("daclip_vit_b32")["params"]
    ckpt = {"epoch": 30, "state_dict": {f"module.{k}": v for k, v in _meta_state(keys).items()}}
    m = _meta(DaCLIP.vit_b_32)
    assert load_daclip(m, ckpt) is m
    missing = dict(ckpt["state_dict"])
    missing.pop("module.visual_control.transformer.zero_modules.3.bias")
    with pytest.raises(ReleaseLoadError, match="1 missing keys: visual_control.transformer.zero_modules.3.bias"):
        load_daclip(_meta(DaCLIP.vit_b_32), {"state_dict": missing})


def test_the_image_tower_is_registered_once_but_listed_twice_like_the_release():
    m = _fill_all(DaCLIP.tiny(), seed=2)
    names = [n for n, _ in m.named_parameters(remove_duplicate=False)]
    assert not any(n.startswith("visual.") for n in names) and len(names) == len(set(names))
    sd = m.state_dict()
    assert sd["visual.conv1.weight"] is sd["clip.visual.conv1.weight"]
    other = DaCLIP.tiny()
    other.load_state_dict(sd, strict=True)
    assert torch.equal(other.visual.proj, m.clip.visual.proj)
    bad = dict(sd)
    bad["visual.proj"] = sd["visual.proj"] + 1
    with pytest.raises(RuntimeError, match="two copies of CLIP's image tower disagree"):
        DaCLIP.tiny().load_state_dict(bad)
    short = {k: v for k, v in sd.items() if k != "visual.ln_pre.weight"}
    with pytest.raises(RuntimeError, match="Missing key.*visual.ln_pre.weight"):
        DaCLIP.tiny().load_state_dict(short, strict=True)
    DaCLIP.tiny().load_state_dict(short, strict=False)
    # nested (prefix "daclip."), as in the restorer
    r = DACLIPRestorer.tiny()
    assert "daclip.visual.conv1.weight" in r.state_dict()
    DACLIPRestorer.tiny().load_state_dict(r.state_dict(), strict=True)


def test_plain_clip_file_becomes_the_release_starting_point():
    clip_keys = load_keys("clip_vit_b32")["params"]
    state = daclip_state_from_clip(_meta_state(clip_keys), layers=12)
    assert set(state) == set(load_keys("daclip_vit_b32")["state_dict_keys"])
    load_daclip(_meta(DaCLIP.vit_b_32), _meta_state(clip_keys), from_clip=True)
    with pytest.raises(ValueError, match="visual.class_embedding"):
        daclip_state_from_clip({"logit_scale": torch.zeros(())}, layers=12)
    # numerically: the controller starts as CLIP's image tower, so content = degradation = CLIP's embedding
    tiny_clip = DaCLIP.tiny().clip
    _fill_all(tiny_clip, seed=3)
    m = load_daclip(DaCLIP.tiny(), tiny_clip.state_dict(), from_clip=True).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, degra = m.encode_image(x, control=True)
        plain = tiny_clip.eval().encode_image(x)
    torch.testing.assert_close(feats, plain, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(degra, plain, atol=1e-6, rtol=1e-6)


def test_initial_controller_copies_the_image_tower():
    m = _fill_all(DaCLIP.tiny(), seed=5)
    m.initial_controller()
    own = dict(m.visual_control.named_parameters())
    for k, p in m.clip.visual.named_parameters():
        k2 = k.replace("transformer.", "transformer.transformer.", 1) if k.startswith("transformer.") else k
        assert torch.equal(own[k2], p), k
    assert torch.equal(m.logit_scale, m.clip.logit_scale)


def test_daclip_controller_gets_gradients_and_clip_none():
    m = _fill_all(DaCLIP.tiny())
    m.lock_clip()
    g = torch.Generator().manual_seed(0)
    img, text = torch.randn(2, 3, 32, 32, generator=g), torch.randint(1, 40, (2, 14), generator=g)
    out = m(image=img, text=text)
    s = out["logit_scale"]
    loss = -(s * out["image_features"] @ out["text_features"].T).log_softmax(-1).diag().mean() \
        - (s * out["image_degra_features"] @ out["text_degra_features"].T).log_softmax(-1).diag().mean()
    loss.backward()
    assert all(p.grad is None for p in m.clip.parameters())
    for k, p in m.visual_control.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, k
    assert m.logit_scale.grad is not None


def test_clip_preprocess_is_the_release_clip_transform_within_one_8bit_level():
    fx = _pt("daclip_clip_transform")
    y = clip_preprocess(fx["image"].float() / 255)
    assert list(y.shape) == fx["output_shape"] == [1, 3, 224, 224]
    err = (y[..., ::7, ::7] - fx["output_every_7th"]).abs()
    level = 1 / 255 / 0.26130258  # one 8-bit level after the widest normalisation
    assert float(err.max()) <= level + 1e-4 and float(err.mean()) < 0.2 * level
    # a 1-pixel crop offset (floor instead of round) would break the match
    shifted = torch.roll(y, 1, dims=-1)[..., ::7, ::7]
    assert float((shifted - fx["output_every_7th"]).abs().max()) > 2 * level


def test_clip_preprocess_shapes_and_portrait_images():
    y = clip_preprocess(torch.full((2, 3, 70, 40), 0.5), 32)
    assert y.shape == (2, 3, 32, 32)
    expect = (127 / 255 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor(
        [0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(y[0, :, 5, 5], expect, atol=1e-5, rtol=1e-5)


def test_restorer_tiny_restores_and_trains_only_the_unet():
    torch.manual_seed(0)
    r = DACLIPRestorer.tiny(T=3)
    lq, gt = torch.rand(2, 3, 20, 24), torch.rand(2, 3, 20, 24)
    r.eval()
    y1, y2 = r(lq), r(lq)
    assert y1.shape == lq.shape and torch.isfinite(y1).all() and torch.equal(y1, y2)
    r.train()
    assert not r.daclip.training
    loss = r.training_loss(lq, gt, generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert all(p.grad is None for p in r.daclip.parameters())
    assert all(p.grad is not None for p in r.unet.parameters())
    assert all(not p.requires_grad for p in r.daclip.parameters())
    with pytest.raises(ValueError, match="context"):
        DACLIPRestorer(DaCLIP.tiny(), ConditionalUNet.tiny(context_dim=24), IRSDE(50, T=2))


def test_daclip_manifests_build_the_release_networks():
    from irlib import weights as W

    m = W.load_weight_manifest("daclip_vit_b32")
    assert m["url"].endswith("/daclip_ViT-B-32.pt") and m["sha256"] is None
    with torch.device("meta"):
        net = W.resolve_network(m)(**m["args"])
    assert list(net.state_dict()) == load_keys("daclip_vit_b32")["state_dict_keys"]
    u = W.load_weight_manifest("daclip_universal_ir")
    _same_state(_meta(lambda: W.resolve_network(u)(**u["args"])), load_keys("irsde_unet"))
    c = W.load_weight_manifest("clip_vit_b32_laion2b")
    assert c["kind"] == "huggingface" and c["hf_repo"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    with torch.device("meta"):
        params, _ = state_shapes(W.resolve_network(c)(**c["args"]))
    assert params == load_keys("clip_vit_b32")["params"]
    for x in (m, u, c):
        assert {"paper": "dinoir", "table": "Table 1", "method": "DA-CLIP"} in x["used_by"]


def test_zoo_entry_builds_the_restorer_at_both_sizes():
    from irlib.models import zoo

    e = zoo.entry("DA-CLIP")
    assert "DINO-IR" in e.note and not e.scale
    tiny = zoo.create("DA-CLIP", size="tiny")
    assert isinstance(tiny, DACLIPRestorer) and tiny.sde.T == 4
    with torch.device("meta"):
        full = zoo.create("DA-CLIP")
    assert full.sde.T == 100 and full.unet.context_dim == 512 == full.daclip.embed_dim
    assert count_params(full.unet) == 48_975_747 and count_params(full.daclip) == 246_213_634


def test_release_options_are_the_option_files_and_drive_the_full_size():
    import json

    from irlib.models.daclip import RELEASE_OPTIONS

    fx = json.loads((FIXTURES / "daclip_options.json").read_text())
    assert fx["source"]["commit"] == COMMIT
    for sec, want in RELEASE_OPTIONS.items():
        assert want == {k: v for k, (v, _line) in fx[sec]["values"].items()}, sec
    o = RELEASE_OPTIONS["restorer_train"]
    r = _meta(DACLIPRestorer.universal)
    assert r.sde.T == o["T"] and r.sde.max_sigma == pytest.approx(o["max_sigma"] / 255)
    s = IRSDE(o["max_sigma"], T=o["T"], schedule=o["schedule"], eps=o["eps"])
    assert float(torch.exp(-s.thetas_cumsum[-1] * s.dt)) == pytest.approx(o["eps"], rel=1e-5)
    u = r.unet
    assert (u.context_dim, u.use_degra_context, u.use_image_context, u.depth) == (512, True, True, 4)


def test_daclip_loss_and_optimizer_groups_are_the_release():
    from irlib.models.daclip import clamp_logit_scale, controller_param_groups, daclip_loss

    fx = _pt("daclip_loss")
    got = daclip_loss(fx["features"])
    for k, v in fx["losses"].items():
        torch.testing.assert_close(got[k], v, atol=1e-5, rtol=1e-5)
    m = DaCLIP(CLIP(**fx["config"]))
    m.lock_clip()
    groups = controller_param_groups(m, weight_decay=0.05)
    assert [g["names"] for g in groups] == [fx["param_groups"]["no_decay"], fx["param_groups"]["decay"]]
    assert [g["weight_decay"] for g in groups] == [0.0, 0.05]
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=2e-5)
    with torch.no_grad():
        m.logit_scale.fill_(7.0)
    clamp_logit_scale(m)
    assert float(m.logit_scale.detach()) == pytest.approx(4.60517, rel=1e-5) and len(opt.param_groups) == 2
