"""Release variants of the contrastive losses: AECR-Net's CR input (no ImageNet normalisation), PCL-SR's
released embedding (8-block BatchNorm discriminator on Haar details), its discriminator loss and samples."""
import pytest
import torch
import torch.nn.functional as F

from irlib.losses import (BNDiscriminator, ContrastiveRegularization, PCLLoss, VGGFeatures, anisotropic_blur,
                          dual_contrastive_d_loss, haar_details)


def _first_conv_input(cr, batch, out):
    seen = []
    h = cr.vgg.features[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    cr(out, batch)
    h.remove()
    return seen  # gt, lq, out (in the order CR embeds them)


@pytest.mark.parametrize("normalize", [False, True])
def test_cr_feeds_vgg_raw_or_imagenet_normalised_input(normalize):
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg19", pretrained=False)
    cr = ContrastiveRegularization(vgg, normalize_input=normalize)
    batch = {"gt": torch.rand(2, 3, 16, 16), "lq": torch.rand(2, 3, 16, 16)}
    out = torch.rand(2, 3, 16, 16)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for got, x in zip(_first_conv_input(cr, batch, out), (batch["gt"], batch["lq"], out)):
        assert torch.allclose(got, (x - mean) / std if normalize else x, atol=1e-6)


def test_cr_default_is_the_release_input_and_values_differ():
    assert ContrastiveRegularization(VGGFeatures("vgg19", pretrained=False)).normalize_input is False
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg19", pretrained=False)
    batch = {"gt": torch.rand(2, 3, 16, 16), "lq": torch.rand(2, 3, 16, 16)}
    out = torch.rand(2, 3, 16, 16)
    a = ContrastiveRegularization(vgg, normalize_input=False)(out, batch)
    b = ContrastiveRegularization(vgg, normalize_input=True)(out, batch)
    assert not torch.allclose(a, b)


def test_haar_details_are_the_orthonormal_detail_bands():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 6)
    d = haar_details(x)
    assert d.shape == (2, 9, 4, 3)
    a, b, c, e = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    ll = (a + b + c + e) / 2
    assert torch.allclose(ll.square().sum() + d.square().sum(), x.square().sum(), rtol=1e-5)  # Parseval
    assert torch.equal(haar_details(torch.full((1, 3, 4, 4), 0.3)), torch.zeros(1, 9, 2, 2))  # flat: no detail
    with pytest.raises(ValueError, match="even"):
        haar_details(torch.rand(1, 3, 5, 4))


def test_haar_details_band_order_is_pytorch_wavelets():
    """PCL-SR cats DWTForward's ``Yh[0][:, :, 0..2]``: afb2d filters the width first, then the height, so band 0 is
    (low along width, high along height). Reference: that separable filtering written out with the Haar filters
    ``lo = (1, 1) / sqrt(2)`` and ``hi = (1, -1) / sqrt(2)`` (dec_hi reversed) applied at even offsets."""
    torch.manual_seed(1)
    x = torch.rand(2, 3, 6, 8, dtype=torch.float64)
    r = 2 ** -0.5

    def along(t, dim):          # (lo, hi) of pairs along ``dim``
        e, o = t.narrow(dim, 0, t.shape[dim]).unfold(dim, 2, 2).unbind(-1)
        return r * (e + o), r * (e - o)

    lo_w, hi_w = along(x, 3)
    ref = torch.cat([along(lo_w, 2)[1], along(hi_w, 2)[0], along(hi_w, 2)[1]], 1)
    assert torch.allclose(haar_details(x), ref)
    rows = torch.arange(8.).repeat_interleave(1).view(1, 1, 8, 1).expand(1, 3, 8, 8)   # varies along the height only
    d = haar_details(rows)
    assert d[:, :3].abs().sum() > 0 and d[:, 3:].abs().sum() == 0   # only band 0 (horizontal edges) responds


@pytest.mark.parametrize("wavelet,size", [(True, 16), (False, 32)])
def test_release_discriminator_has_8_batchnorm_blocks_with_the_released_widths(wavelet, size):
    d = BNDiscriminator(wavelet=wavelet)
    bn_out = []
    d.blocks[4][1].register_forward_hook(lambda mod, args, out: bn_out.append(out))
    logit, feats = d(torch.rand(2, 3, 32, 32), features=True)
    widths, strides = (64, 64, 128, 128, 256, 256, 512, 512), (1, 2, 1, 2, 1, 2, 1, 2)
    s = size
    assert len(feats) == 8
    for f, w, st in zip(feats, widths, strides):
        s = s // st
        assert f.shape == (2, w, s, s)
    assert logit.shape == (2, 1, 4, 4)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) == 8
    assert all(m.bias is None for m in d.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert d.blocks[0][0].in_channels == (9 if wavelet else 3)
    assert torch.equal(feats[4], F.leaky_relu(bn_out[0], 0.2))  # features are taken after the LeakyReLU


def test_release_info_nce_equals_the_formula():
    torch.manual_seed(0)
    loss = PCLLoss(embedding="release")
    assert loss.layers == (4,) and loss.tau == 1.0 and loss.n_aug == 3
    feats = lambda: [torch.randn(3, 5, 2, 2) for _ in range(8)]  # noqa: E731
    o, pos, neg = feats(), [feats() for _ in range(4)], [feats() for _ in range(4)]
    got = loss.info_nce(o, pos, neg)

    def cos(a, b):
        return F.cosine_similarity(a, b, dim=1).mean((1, 2))
    want = 0
    for p in pos:
        num = torch.exp(cos(o[4], p[4]))
        den = num + sum(torch.exp(cos(o[4], n[4])) for n in neg)
        want = want + (-torch.log(num / den)).mean()
    assert torch.allclose(got, want / 4, atol=1e-6)


def test_dual_contrastive_discriminator_loss_equals_the_formula():
    torch.manual_seed(0)
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(2, 1, 2, 2)
    r, f = real.flatten(), fake.flatten()
    want = 0
    for a, others in ((r, f), (-f, -r)):
        want = want + torch.stack([-(torch.exp(ai) / (torch.exp(ai) + torch.exp(others).sum())).log() for ai in a]).mean()
    assert torch.allclose(dual_contrastive_d_loss(real, fake), want, atol=1e-6)


def test_anisotropic_blur_reduces_to_the_isotropic_gaussian():
    from irlib.data.degrade import gaussian_blur

    x = torch.rand(1, 3, 20, 20)
    assert torch.allclose(anisotropic_blur(x, 7, 7, 1.3, 1.3), gaussian_blur(x, 1.3, size=7), atol=1e-6)
    y = anisotropic_blur(x, 9, 3, 2.0, 0.1)  # blurs along x only (sigma 0.1 is a delta)
    assert torch.allclose(y, anisotropic_blur(x, 9, 1, 2.0, 1.0), atol=1e-6)


def _laplacian_energy(x):
    k = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return F.conv2d(x, k, groups=3).abs().mean().item()


def test_release_samples_and_training_step():
    from irlib.data import PatchBatches, split_samples

    torch.manual_seed(0)
    b = PatchBatches(split_samples(64)[0], 32, 2, ("srx4",), seed=0)(0)
    loss = PCLLoss(scale=4, embedding="release")
    pos, neg = loss.samples(b["gt"], b["lq"])
    assert len(pos) == 4 and len(neg) == 4
    assert neg[0] is b["lq"] and all(t.shape == b["gt"].shape for t in pos + neg[1:])
    for t in pos[1:] + neg[1:]:
        assert torch.allclose(t * 255, (t * 255).round(), atol=1e-4)  # quantised to 8 bits
    e = _laplacian_energy(b["gt"])
    # sigmas down to 0.1 and sharpening factors down to 0.5 (as released) leave some copies near HR
    assert sum(_laplacian_energy(n) < e for n in neg[1:]) >= 2
    assert sum(_laplacian_energy(p) > e for p in pos[1:]) >= 2
    before = [p.detach().clone() for p in loss.embed.parameters()]
    stats = loss.embed.blocks[0][1].running_mean.clone()
    out = F.interpolate(b["lq"], scale_factor=4, mode="bicubic").clamp(0, 1).requires_grad_(True)
    v = loss(out, b)
    assert any(not torch.equal(a, p) for a, p in zip(before, loss.embed.parameters()))
    assert not torch.equal(stats, loss.embed.blocks[0][1].running_mean)   # BatchNorm in training mode
    v.backward()
    assert out.grad.abs().sum() > 0 and torch.isfinite(v)
    with pytest.raises(ValueError, match="embedding"):
        PCLLoss(embedding="vgg")
