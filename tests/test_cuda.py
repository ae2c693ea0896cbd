"""GPU checks: the same numbers on CUDA as on the CPU, and mixed precision that still trains.

Skipped where no CUDA device is present (CI has none); run them on a GPU machine with
``python -m pytest tests/test_cuda.py``. TF32 is switched off so fp32 comparisons are tight.
"""
import pytest
import torch

from irlib import diffloss as dl, metrics, spn
from irlib.data import PatchBatches, split_samples
from irlib.losses import LOSSES, VGGFeatures
from irlib.models.edsr import EDSR
from irlib.models.nafnet import NAFNet
from irlib.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_metrics_cuda_equal_cpu():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 48, 48, generator=g), torch.rand(2, 3, 48, 48, generator=g)
    for kw in ({}, {"channel": "y", "crop_border": 4}):
        assert torch.allclose(metrics.psnr(a.cuda(), b.cuda(), **kw).cpu(), metrics.psnr(a, b, **kw), atol=1e-4)
        assert torch.allclose(metrics.ssim(a.cuda(), b.cuda(), **kw).cpu(), metrics.ssim(a, b, **kw), atol=1e-5)


def test_history_models_cuda_loop_vmap_and_cpu_agree():
    torch.manual_seed(0)
    m = EDSR(4, 16, 2)
    x = torch.rand(2, 3, 12, 12)
    ref = spn.HistoryModels(m.double(), (1, 2, 3, 4))(x.double())
    m = m.float()
    outs = [spn.HistoryModels(m, (1, 2, 3, 4), batched=b).cuda()(x.cuda()).cpu().double() for b in (False, True)]
    for o in outs:
        assert o.shape == (4, 2, 3, 48, 48)
        assert rel(o, ref) < 1e-5


def test_spn_loss_cuda_equals_float64_cpu():
    torch.manual_seed(0)
    m, vgg = EDSR(4, 16, 2), VGGFeatures(pretrained=False)
    batch = PatchBatches(split_samples(64)[0], 32, 2, ("srx4",), seed=0)(0)
    out = torch.rand(2, 3, 32, 32)
    ref = spn.SPNLoss(m.double(), embed=vgg.double())(out.double(), {k: v.double() for k, v in batch.items() if k != "task"})
    m, vgg = m.float(), vgg.float()
    got = spn.SPNLoss(m, embed=vgg).cuda()(out.cuda(), {"lq": batch["lq"].cuda()})
    assert abs(float(got) - float(ref)) / float(ref) < 1e-4


def test_diffloss_bf16_matches_fp32_and_reaches_restorer():
    torch.manual_seed(0)
    unet = dl.ADMUNet(dl.ADM_TINY).cuda()
    gt = torch.rand(2, 3, 32, 32, device="cuda")
    out = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1).requires_grad_(True)
    t = torch.tensor([100, 700], device="cuda")
    eps = torch.randn(2, 3, 32, 32, device="cuda")
    grads, vals = [], []
    for kw in ({}, {"autocast": True}, {"autocast": True, "channels_last": True}, "bf16 weights"):
        unet.to(memory_format=torch.contiguous_format)
        if kw == "bf16 weights":
            kw = {}
            unet.to_compute_dtype(torch.bfloat16)
        v = dl.DiffLoss(unet, **kw)(out, {"gt": gt}, t=t, eps=eps)
        (g,) = torch.autograd.grad(v, out)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        vals.append(float(v.detach())), grads.append(g.flatten())
    assert abs(vals[1] - vals[0]) / vals[0] < 5e-2
    for g in grads[1:]:
        assert torch.nn.functional.cosine_similarity(g, grads[0], dim=0) > 0.95
    assert all(p.grad is None for p in unet.parameters())


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_trainer_mixed_precision_trains_on_cuda(amp):
    torch.manual_seed(0)
    imgs = split_samples(64)[0]
    batches = PatchBatches(imgs, 32, 4, ("noise25",), seed=0)
    tr = Trainer(NAFNet(8, (1, 1, 1, 1)), batches, {"l1": (1.0, LOSSES["l1"])}, lr=1e-3, device="cuda",
                 amp=amp, progress=False)
    log = tr.fit(30)
    assert log.loss.notna().all() and not tr.collapsed
    assert log.loss.tail(5).mean() < log.loss.head(5).mean()
    assert next(tr.model.parameters()).dtype == torch.float32
