"""DINO-IR's DINOv2 analyses (irlib.dinoir studies): joint PCA, the Fig. 3b measurements, the gating-score and
Fig. 5 studies on a tiny random ViT, with row keys checked against the reference CSV."""
import numpy as np
import pytest
import torch

from irlib import dinoir
from irlib.papers.dinoir import studies as dstudies
from irlib.engine import Builder, RunStore, runner
from irlib.engine.features import FeatureBank
from irlib.engine.runner import build_model
from irlib.engine.spec import TestSet as TS
from irlib.engine.jobs import StudyContext
from irlib.results import reference

KEY = ["table", "method", "setting", "dataset", "metric"]


@pytest.fixture(scope="module")
def fb():
    return FeatureBank("random", "tiny")


def _ref_keys(table):
    ref = reference("dinoir")
    return set(map(tuple, ref[ref.table == table][KEY].values))


def _keys(df):
    return set(map(tuple, df[KEY].fillna("").values))


def _trained(tmp_path, net, fb, **net_kw):
    """A run spec whose 'final weights' (a seeded random tiny network) sit in a store, marked done."""
    B = Builder("dinoir", "smoke")
    from irlib.schedules import original

    spec = B.run(net, train=[("offline", "rain")], schedule=original("DINO-IR multi-task"), net_kw=net_kw)
    store = RunStore(tmp_path / "runs")
    torch.manual_seed(3)
    model = build_model(spec, fb)
    d = store.dir(spec.key())
    d.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "step": 0}, d / "final.pt")
    (d / "done.json").write_text('{"collapsed": false}')
    return spec, store, model


def _ctx(store, tmp_path, fb, name, deps=()):
    spec = Builder("dinoir", "smoke").study(name, "irlib.dinoir:x", deps=deps)
    out = tmp_path / name.replace(" ", "")
    out.mkdir()
    return StudyContext(store=store, spec=spec, device="cpu", data_root="data", fb=fb, out=out)


def test_joint_pca_is_fitted_on_every_image():
    torch.manual_seed(0)
    feats = {"clean": torch.randn(8, 4, 4), "rainy": torch.randn(8, 4, 4) + 2.0, "noisy": torch.randn(8, 4, 4) - 1.0}
    pca, proj = dstudies.joint_pca(feats)
    everything = torch.cat([f.reshape(8, -1).T for f in feats.values()]).double().numpy()
    assert np.allclose(pca.mean_, everything.mean(axis=0))
    assert not np.allclose(pca.mean_, feats["clean"].reshape(8, -1).T.double().numpy().mean(axis=0))
    only_clean, _ = dstudies.joint_pca(feats, fit_on=["clean"])
    assert np.allclose(only_clean.mean_, feats["clean"].reshape(8, -1).T.double().numpy().mean(axis=0))
    assert all(p.shape == (4, 4, 3) for p in proj.values())
    rgb = dstudies.pca_rgb(feats)  # one colour scale for the whole row: each component spans [0, 1] over all images
    allp = np.concatenate([m.reshape(-1, 3) for m in rgb.values()])
    assert np.allclose(allp.min(0), 0) and np.allclose(allp.max(0), 1)


def test_fig3b_sigma_list_matches_the_papers_image_variance():
    psnr = 20 * np.log10(255 / np.array(dstudies.FIG3B_SIGMAS, dtype=float))   # unclipped Gaussian noise
    assert np.var(psnr) == pytest.approx(36.5, abs=0.05)     # paper: 36.85


def test_feature_psnr_conventions():
    torch.manual_seed(0)
    f, g = torch.randn(48, 4, 4, dtype=torch.float64), torch.randn(48, 4, 4, dtype=torch.float64)
    # min-max reading is blind to an affine rescaling of both maps; the clean-range reading uses the clean range
    assert dstudies.feature_psnr(3 * f + 1, 3 * g + 1) == pytest.approx(dstudies.feature_psnr(f, g), abs=1e-9)
    peak = float(g.max() - g.min())
    want = 10 * np.log10(peak ** 2 / float(((f - g) ** 2).mean()))
    assert dstudies.feature_psnr(f, g, "clean-range") == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="norm"):
        dstudies.feature_psnr(f, g, "peak")


def test_noise_robustness_measures_what_the_vit_sees():
    torch.manual_seed(0)
    dino = dinoir.DINOFeatures(pretrained=False, tiny=True, img_size=224)
    img = torch.rand(3, 240, 300)
    sig = np.array([5, 10, 20, 40, 80])
    df = dstudies.noise_robustness(dino, img, sigmas=tuple(sig), norm="clean-range")
    assert df.attrs["side"] == 224                    # a 224 px centre crop: the ViT sees it without resampling
    im = df[df.kind == "image"].set_index("sigma").PSNR
    assert np.allclose(im.values, 20 * np.log10(255 / sig), atol=0.05)
    # the patch embedding is linear: with a fixed peak its PSNR falls exactly like the image's (same variance)
    fi = df[df.kind == "f_IMAGE"].set_index("sigma")
    assert np.var(fi.PSNR.values) == pytest.approx(np.var(im.values), rel=0.03)
    assert set(df.kind) == {"image", "f_IMAGE", "f_DINO"} and abs(df.groupby("kind").deviation.sum()).max() < 1e-9
    small = dstudies.noise_robustness(dino, img[:, :100, :100], sigmas=(10,))  # smaller than 224: resized view
    assert small.attrs["side"] == 98                  # the short side, down to the 14 px patch grid


def test_random_dino_blocks_differ_and_are_reproducible():
    x = torch.rand(1, 3, 56, 56)
    a = dinoir.DINOFeatures(pretrained=False, tiny=True, img_size=56, layers=(2, 11))
    b = dinoir.DINOFeatures(pretrained=False, tiny=True, img_size=56, layers=(0, 1, 2, 3))
    fa, fb_ = a(x), b(x)
    assert torch.equal(fa[0], fb_[2])                 # one seeded network whatever the layers asked
    assert float((fa[0] - fa[1]).abs().mean()) > 1e-2  # LayerScale 1: random blocks are not identities
    with pytest.raises(ValueError, match="outside"):
        dinoir.DINOFeatures(pretrained=False, tiny=True, img_size=56, layers=(12,))


def test_fig3b_study_rows_carry_the_reference_keys(tmp_path, fb):
    ctx = _ctx(RunStore(tmp_path / "runs"), tmp_path, fb, "Fig. 3b")
    rows = dstudies.fig3b_study(ctx, "offline", limit=2, sigmas=(10, 25, 50))
    assert _keys(rows) == _ref_keys("Fig. 3b")
    assert (rows.n_images == 2).all() and (rows.value > 0).all()
    assert (ctx.out / "fig3b.csv").is_file()


def test_gating_study_rows_carry_the_reference_keys(tmp_path, fb):
    spec, store, model = _trained(tmp_path, "DINO-IR", fb, layers=(2, 6, 11))
    ctx = _ctx(store, tmp_path, fb, "Text", deps=(spec,))
    rows = dstudies.gating_study(ctx, (("offline", "rain"), ("offline", "noise25")), limit=2)
    assert _keys(rows) == _ref_keys("Text")
    assert rows.value.sum() == pytest.approx(1.0, abs=1e-5) and (rows.n_images == 4).all()
    lq = runner.test_pairs(TS("offline", "rain", limit=1), "data")[0][0]
    model.context(lq[None])                               # the scores are the gate's softmax on the images
    first = model.psf.last_scores[0].tolist()
    per = __import__("pandas").read_csv(ctx.out / "gating.csv")
    assert len(per) == 2 and np.isfinite(first).all()


def test_fig5_light_rain_is_the_derainer_output(tmp_path, fb):
    spec, store, model = _trained(tmp_path, "Restormer", fb)
    ctx = _ctx(store, tmp_path, fb, "Fig. 5", deps=(spec,))
    rows = dstudies.fig5_study(ctx, "offline", limit=2)
    z = np.load(ctx.out / "fig5.npz")
    heavy, clean = runner.test_pairs(TS("offline", "rain", limit=1), "data")[0]
    light = dstudies.derain(model.eval(), heavy)
    assert list(z["names"]) == ["heavy rain", "light rain", "no rain"]
    assert np.allclose(z["images"][1], light.permute(1, 2, 0).numpy(), atol=1e-6)
    assert not np.allclose(z["images"][1], z["images"][0], atol=1e-3)
    assert np.allclose(z["images"][2], clean.permute(1, 2, 0).numpy())
    assert set(rows.table) == {"Fig. 5"} and len(z["dist_heavy"]) == 2
    dist = rows[rows.metric == "L1 distance to no rain"].set_index("setting").value
    assert dist["heavy rain"] == pytest.approx(float(z["dist_heavy"].mean()))
