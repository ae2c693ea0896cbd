"""DiffLoss Fig. 2: h-space SVD perturbation study (hooks, regeneration, ResNet features, rows, figures)."""
import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

from irlib import diffloss as dl
from irlib.papers.diffloss import studies as dls

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    u = dl.ADMUNet(dl.ADM_TINY)
    for p in u.parameters():
        torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
    return u.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def _spectra():
    """Two 16 x 36 matrices: one dominated by a single component, one nearly isotropic."""
    g = torch.Generator().manual_seed(0)
    low = torch.randn(16, 1, generator=g) @ torch.randn(1, 36, generator=g) * 5 + 0.1 * torch.randn(16, 36, generator=g)
    iso = torch.randn(16, 36, generator=g)
    return torch.stack([low, iso]).reshape(2, 16, 6, 6)


# ------------------------------------------------------------------ hooks
def test_additive_perturbation_has_the_same_relative_size_for_every_input():
    h = _spectra()
    rec = []
    p = dls.svd_perturb_hook(0.5, mode="additive", record=rec)(h)
    m, mp = h.reshape(2, 16, -1), p.reshape(2, 16, -1)
    rel = (mp - m).flatten(1).norm(dim=1) / m.flatten(1).norm(dim=1)
    assert torch.allclose(rel, torch.tensor([0.5, 0.5]), atol=1e-5) and torch.allclose(rec[0], rel, atol=1e-5)
    s0, s1 = torch.linalg.svdvals(m), torch.linalg.svdvals(mp)
    assert torch.allclose(s1[:, 0], s0[:, 0] + 0.5 * m.flatten(1).norm(dim=1), rtol=1e-4)  # σ1 + α‖h‖
    assert torch.allclose(s1[:, 1:], s0[:, 1:], atol=1e-4)
    u0, u1 = torch.linalg.svd(m)[0][:, :, 0], torch.linalg.svd(mp)[0][:, :, 0]
    assert torch.allclose((u0 * u1).sum(1).abs(), torch.ones(2), atol=1e-5)  # same principal direction


def test_multiplicative_perturbation_size_depends_on_the_spectrum():
    h = _spectra()
    rec = []
    p = dls.svd_perturb_hook(1.0, record=rec)(h)
    m = h.reshape(2, 16, -1)
    s0, s1 = torch.linalg.svdvals(m), torch.linalg.svdvals(p.reshape(2, 16, -1))
    assert torch.allclose(s1[:, 0], 2 * s0[:, 0], rtol=1e-4) and torch.allclose(s1[:, 1:], s0[:, 1:], atol=1e-4)
    want = s0[:, 0] / m.flatten(1).norm(dim=1)  # ‖Δh‖/‖h‖ = s·σ1/‖h‖_F
    assert torch.allclose(rec[0], want, atol=1e-5)
    assert float(rec[0][0]) > 0.95 and float(rec[0][1]) < 0.6  # low-rank h gets a much larger perturbation


def test_top_k_additive_keeps_the_relative_size():
    h = _spectra()
    rec = []
    dls.svd_perturb_hook(0.3, k=3, mode="additive", record=rec)(h)
    assert torch.allclose(rec[0], torch.full((2,), 0.3), atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        dls.svd_perturb_hook(1.0, mode="scale")
    with pytest.raises(ValueError, match="k"):
        dls.svd_perturb_hook(1.0, k=0)


def test_modes_in_the_tiny_adm_middle_block(unet):
    """Through the UNet: additive gives the same ‖Δh‖/‖h‖ for very different inputs, multiplicative scales
    σ1 of h by exactly 1+s, and its relative size differs between the inputs."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    x = torch.stack([torch.rand(3, 32, 32) * 2 - 1, torch.stack([xx, yy, xx * yy]) * 2 - 1])
    t = torch.tensor([300, 300])
    _, h0 = unet(x, t, return_h=True)
    m0 = h0.reshape(2, h0.shape[1], -1)
    rel = {}
    for mode, s in (("additive", 0.7), ("multiplicative", 0.7)):
        unet.h_hook = dls.svd_perturb_hook(s, mode=mode)
        try:
            _, h1 = unet(x, t, return_h=True)
        finally:
            unet.h_hook = None
        m1 = h1.reshape(2, h1.shape[1], -1)
        rel[mode] = (m1 - m0).flatten(1).norm(dim=1) / m0.flatten(1).norm(dim=1)
        if mode == "multiplicative":
            assert torch.allclose(torch.linalg.svdvals(m1)[:, 0], 1.7 * torch.linalg.svdvals(m0)[:, 0], rtol=1e-4)
    assert torch.allclose(rel["additive"], torch.full((2,), 0.7), atol=1e-5)
    assert abs(float(rel["multiplicative"][0] - rel["multiplicative"][1])) > 0.01


# ------------------------------------------------------------------ regeneration
def test_one_step_regeneration_is_the_clamped_x0_prediction(unet):
    x = torch.rand(2, 3, 32, 32)
    noise = torch.randn(2, 3, 32, 32)
    got = dls.regenerate(unet, x, t_start=250, steps=1, noise=noise)
    abar = float(dl.DDPMSchedule().abar[250])
    xt = math.sqrt(abar) * (x * 2 - 1) + math.sqrt(1 - abar) * noise
    e = unet(xt, torch.tensor([250, 250]))[:, :3]
    want = ((xt - math.sqrt(1 - abar) * e) / math.sqrt(abar)).clamp(-1, 1)
    assert torch.allclose(got, (want + 1) / 2, atol=1e-5)


def test_regeneration_restores_the_previous_hook_and_validates(unet):
    sentinel = dls.svd_perturb_hook(0.0)
    unet.h_hook = sentinel
    try:
        dls.regenerate(unet, torch.rand(1, 3, 32, 32), t_start=100, steps=2, strength=1.0)
        assert unet.h_hook is sentinel
    finally:
        unet.h_hook = None
    with pytest.raises(ValueError, match="t_start"):
        dls.regenerate(unet, torch.rand(1, 3, 32, 32), t_start=1000)
    with pytest.raises(ValueError, match="noise"):
        dls.regenerate(unet, torch.rand(1, 3, 32, 32), noise=torch.randn(2, 3, 32, 32))


# ------------------------------------------------------------------ features
def test_resnet_features_use_torchvision_imagenet_normalisation():
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval()
    feat = dls.ResNetFeatures(net)
    x = torch.rand(2, 3, 32, 32)
    tf = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()  # metadata only, no download
    want = torchvision.transforms.Normalize(tf.mean, tf.std)(x)
    assert torch.allclose(feat.preprocess(x), want, atol=1e-6)
    net_fc, net.fc = net.fc, torch.nn.Identity()
    try:
        with torch.no_grad():
            ref = net(want)
            got = feat(x)
    finally:
        net.fc = net_fc
    assert got.shape == (2, 2048) and torch.allclose(got, ref, atol=1e-5)
    with pytest.raises(TypeError, match="ResNet"):
        dls.ResNetFeatures(torchvision.models.vgg11(weights=None))


# ------------------------------------------------------------------ the study
def _groups():
    g = torch.Generator().manual_seed(5)
    clean = torch.rand(3, 3, 32, 32, generator=g)
    return {"clean": clean, "degraded": clean * 0.3, "copy of clean": clean.clone()}


def test_hspace_study_rows_pairing_and_images(unet, resnet):
    groups = _groups()
    df, images = dls.hspace_study(unet, groups, (0.0, 1.0, 3.0), t_start=200, ddim_steps=3, seed=1, classifier=resnet,
                                 batch_size=2, keep_images=2, degradation="lowlight")
    assert len(df) == 3 * 3 * 3
    assert {"degradation", "group", "mode", "level", "level_index", "image", "distance", "rel_perturbation",
            "t_start", "ddim_steps"} <= set(df.columns)
    assert (df[df.level == 0.0].distance == 0).all() and (df[df.level > 0].distance > 0).all()
    assert list(df.level_index.unique()) == [1, 2, 3] and set(df.degradation) == {"lowlight"}
    a = df[df.group == "clean"].distance.to_numpy()
    b = df[df.group == "copy of clean"].distance.to_numpy()
    assert np.allclose(a, b, rtol=1e-5)  # each image's noise is its own, whatever the group
    assert set(images) == set(groups) and set(images["clean"]) == {0.0, 1.0, 3.0}
    assert images["clean"][1.0].shape == (2, 3, 32, 32) and 0 <= float(images["clean"][1.0].min())
    ref = dls.regenerate(unet, groups["clean"][:2], 200, 3, 0.0, noise=dls.study_noise(3, 32, 1)[:2])
    assert torch.allclose(images["clean"][0.0], ref, atol=1e-5)


def test_hspace_study_is_independent_of_batching(unet, resnet):
    groups = {"clean": _groups()["clean"]}
    one, _ = dls.hspace_study(unet, groups, (1.0,), t_start=200, ddim_steps=2, classifier=resnet, batch_size=1)
    all_, _ = dls.hspace_study(unet, groups, (1.0,), t_start=200, ddim_steps=2, classifier=resnet, batch_size=8)
    assert np.allclose(one.distance, all_.distance, rtol=1e-4)


def test_additive_study_gives_every_image_the_same_relative_perturbation(unet, resnet):
    df, _ = dls.hspace_study(unet, _groups(), (0.25, 1.0), mode="additive", t_start=200, ddim_steps=2,
                            classifier=resnet)
    assert np.allclose(df.rel_perturbation, df.level, atol=1e-5)
    mult, _ = dls.hspace_study(unet, _groups(), (1.0,), t_start=200, ddim_steps=2, classifier=resnet)
    assert mult.rel_perturbation.std() > 1e-3  # multiplicative: the size differs between images


def test_hspace_study_fits_other_sizes_and_validates(unet, resnet):
    df, images = dls.hspace_study(unet, {"wide": torch.rand(2, 3, 40, 64)}, (1.0,), t_start=100, ddim_steps=1,
                                 classifier=resnet)
    assert len(df) == 2 and images["wide"][1.0].shape[-2:] == (32, 32)
    with pytest.raises(ValueError, match="mode"):
        dls.hspace_study(unet, _groups(), (1.0,), mode="scaled", classifier=resnet)
    with pytest.raises(ValueError, match="levels"):
        dls.hspace_study(unet, _groups(), (), classifier=resnet)
    with pytest.raises(ValueError, match="N,3,H,W"):
        dls.hspace_study(unet, {"gray": torch.rand(2, 1, 32, 32)}, (1.0,), classifier=resnet)


@pytest.mark.parametrize("task", ["lowlight", "haze", "rain"])
def test_study_groups_per_degradation(task):
    clean = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    without = torch.nn.Conv2d(3, 3, 3, padding=1)
    groups = dls.study_groups(clean, task, without, torch.nn.Identity(), seed=4)
    assert list(groups) == list(dls.STUDY_GROUPS)
    assert not torch.allclose(groups["degraded"], clean)
    assert torch.equal(groups["degraded"], dls.study_groups(clean, task, without, torch.nn.Identity(), seed=4)["degraded"])
    assert torch.allclose(groups["restored w/ DiffLoss"], groups["degraded"])  # the identity restorer
    with torch.no_grad():
        assert torch.allclose(groups["restored w/o DiffLoss"], without(groups["degraded"]).clamp(0, 1), atol=1e-6)


# ------------------------------------------------------------------ summary rows and figures
def _synthetic_rows():
    rng = np.random.default_rng(0)
    rows = []
    for deg in ("lowlight", "haze"):
        for gi, grp in enumerate(dls.STUDY_GROUPS):
            for li, lv in enumerate((0.5, 1.0, 2.0, 4.0), start=1):
                for i in range(5):
                    rows.append({"degradation": deg, "group": grp, "mode": "multiplicative", "level": lv,
                                 "level_index": li, "image": i, "distance": lv * (gi + 1) + rng.normal(0, 0.3),
                                 "rel_perturbation": 0.4 * lv, "t_start": 400, "ddim_steps": 20})
    return pd.DataFrame(rows)


def test_summary_rows_are_tidy_and_correct():
    from scipy import stats

    df = _synthetic_rows()
    s = dls.hspace_summary(df)
    assert list(s.columns) == ["degradation", "group", "level", "mode", "metric", "value", "n_images"]
    assert set(s.metric) == {"feature_l2_mean", "feature_l2_std", "feature_l2_ci95", "rel_h_perturbation_mean"}
    assert (s.n_images == 5).all() and len(s) == 2 * 4 * 4 * 4
    d = df[(df.degradation == "haze") & (df.group == "degraded") & (df.level == 2.0)].distance.to_numpy()
    pick = s[(s.degradation == "haze") & (s.group == "degraded") & (s.level == 2.0)].set_index("metric").value
    assert pick["feature_l2_mean"] == pytest.approx(d.mean())
    assert pick["feature_l2_ci95"] == pytest.approx(stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5))


def test_fig2b_plots_every_group_visibly_with_the_legend_outside():
    import matplotlib.pyplot as plt

    df = _synthetic_rows()
    fig = dls.plot_hspace_study(df)
    fig.canvas.draw()
    axes = [ax for ax in fig.axes if ax.get_title() in ("lowlight", "haze")]
    assert len(axes) == 2
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == list(dls.STUDY_GROUPS)
    lb = legend.get_window_extent()
    for ax in axes:
        assert not lb.overlaps(ax.get_window_extent())  # the legend hides no bar
        conts = ax.containers
        assert [c.get_label() for c in conts] == list(dls.STUDY_GROUPS)
        xs = [tuple(np.round(c.lines[0].get_xdata(), 3)) for c in conts]
        assert len(set(xs)) == 4  # offset: no series sits on top of another
        y0, y1 = ax.get_ylim()
        for c in conts:
            line = c.lines[0]
            assert line.get_visible() and (line.get_alpha() in (None, 1)) and line.get_linewidth() > 1
            assert ((line.get_ydata() >= y0) & (line.get_ydata() <= y1)).all()
        assert ax.get_xlabel().startswith("perturbation level")
        assert "①" in ax.get_xticklabels()[0].get_text()
    assert axes[0].get_ylabel().replace("\n", " ") == dls.Y_LABEL
    assert "Fig. 2b" in fig.get_suptitle()
    # an error bar's half-height is the 95% t-interval of that point's mean
    d = df[(df.degradation == "lowlight") & (df.group == "clean") & (df.level == 1.0)].distance.to_numpy()
    seg = axes[0].containers[0].lines[2][0].get_segments()[1]
    from scipy import stats

    assert (seg[1][1] - seg[0][1]) / 2 == pytest.approx(stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5), rel=1e-6)
    plt.close(fig)
    with pytest.raises(ValueError, match="one perturbation mode"):
        dls.plot_hspace_study(pd.concat([df, df.assign(mode="additive")]))


def test_fig2a_strip_layout(unet, resnet):
    import matplotlib.pyplot as plt

    groups = _groups()
    _, images = dls.hspace_study(unet, groups, (1.0, 2.0), t_start=100, ddim_steps=1, classifier=resnet, keep_images=1)
    fig = dls.plot_regeneration_strip(images, inputs=groups, mode="multiplicative")
    assert len(fig.axes) == 3 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == ["input", "unperturbed", "① s=1", "② s=2"]
    assert [fig.axes[4 * r].get_ylabel() for r in range(3)] == list(groups)
    plt.close(fig)
    with pytest.raises(IndexError, match="keep_images"):
        dls.plot_regeneration_strip(images, index=1)


def test_save_hspace_figures_writes_pngs_and_captions(unet, resnet, tmp_path):
    groups = _groups()
    df, images = dls.hspace_study(unet, groups, (1.0,), t_start=100, ddim_steps=1, classifier=resnet, keep_images=1,
                                 degradation="lowlight")
    paths = dls.save_hspace_figures(df, tmp_path, smoke=True, strips={"lowlight, multiplicative": images},
                                   inputs={"lowlight, multiplicative": groups})
    assert [p.name for p in paths] == ["diffloss_fig2b_multiplicative.png", "diffloss_fig2a_lowlightmultiplicative.png"]
    for p in paths:
        meta = json.loads(p.with_suffix(".json").read_text())
        assert p.is_file() and meta["smoke"] is True and meta["paper"] == "diffloss"
    assert "ResNet-50" in json.loads(paths[0].with_suffix(".json").read_text())["caption"]
    with pytest.raises(ValueError, match="mode"):
        dls.save_hspace_figures(df, tmp_path, smoke=True, strips={"lowlight": images})
