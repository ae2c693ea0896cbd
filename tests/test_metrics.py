import math

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from irlib.data import sample_images
from irlib.metrics import psnr, rgb_to_y, ssim


@pytest.fixture(scope="module")
def pair():
    gt = sample_images(64)["skimage:astronaut"]
    g = torch.Generator().manual_seed(0)
    return (gt + 0.05 * torch.randn(gt.shape, generator=g)).clamp(0, 1), gt


def test_rgb_matches_scikit_image(pair):
    pred, gt = pair
    a, b = pred.permute(1, 2, 0).double().numpy(), gt.permute(1, 2, 0).double().numpy()
    assert float(psnr(pred, gt)) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1.0), abs=1e-4)
    ref = structural_similarity(a * 255, b * 255, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=255)
    assert float(ssim(pred, gt)) == pytest.approx(ref, abs=1e-5)


def test_y_channel_matches_hand_computed_matlab_value():
    # two flat colours: Y = 16 + 65.481 R + 128.553 G + 24.966 B (MATLAB rgb2ycbcr), so MSE = dY^2
    a = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1).expand(3, 16, 16)
    b = torch.tensor([0.25, 0.35, 0.7]).view(3, 1, 1).expand(3, 16, 16)
    ya = 16 + 65.481 * 0.2 + 128.553 * 0.4 + 24.966 * 0.6
    yb = 16 + 65.481 * 0.25 + 128.553 * 0.35 + 24.966 * 0.7
    want = 10 * math.log10(255 ** 2 / (ya - yb) ** 2)
    assert float(psnr(b, a, channel="y")) == pytest.approx(want, abs=1e-4)
    assert float(rgb_to_y(torch.ones(1, 3, 1, 1))) == pytest.approx(235.0, abs=1e-3)
    assert float(rgb_to_y(torch.zeros(1, 3, 1, 1))) == pytest.approx(16.0)


def test_crop_quantize_and_batching(pair):
    pred, gt = pair
    batch = psnr(torch.stack([pred, gt * 0.9]), torch.stack([gt, gt]), crop_border=4)
    assert batch.shape == (2,)
    assert float(batch[0]) == pytest.approx(float(psnr(pred[:, 4:-4, 4:-4], gt[:, 4:-4, 4:-4])), abs=1e-5)
    q = psnr(pred, gt, quantize=True)
    manual = psnr((pred * 255).round() / 255, (gt * 255).round() / 255)
    assert float(q) == pytest.approx(float(manual), abs=1e-5)


def test_bad_inputs_raise(pair):
    pred, gt = pair
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(pred[:, :32], gt)
    with pytest.raises(ValueError, match="smaller than"):
        ssim(pred[:, :8, :8], gt[:, :8, :8])
    with pytest.raises(ValueError, match="crop_border"):
        psnr(pred, gt, crop_border=40)


def test_frechet_distance_matches_closed_form():
    from irlib.metrics import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    b = a * 2 + 1  # N(1, 4I) vs N(0, I): |mu|^2 = 3, trace term 3 * (1 + 4 - 2*2) = 3
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b[:1])


def test_lpips_wrapper_orders_distortions():
    from irlib.metrics import lpips

    gt = sample_images(64)["skimage:chelsea"][None]
    g = torch.Generator().manual_seed(0)
    mild = (gt + 0.02 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    strong = (gt + 0.3 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    d0, d1, d2 = (float(lpips(x, gt, pretrained=False)[0]) for x in (gt, mild, strong))
    assert d0 == pytest.approx(0.0, abs=1e-6) and d1 < d2  # even a random backbone ranks these
