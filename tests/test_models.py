import pytest
import torch

from irlib.diffloss import ADM_256_UNCOND, ADMUNet
from irlib.models.edsr import EDSR
from irlib.models.ffanet import FFANet
from irlib.models.nafnet import NAFNet
from irlib.models import count_params
from irlib.models.restormer import TINY, Restormer
from irlib.textprompt import TextPromptIR


@pytest.mark.parametrize("make,count", [
    (lambda: Restormer(), 26_126_644),            # Restormer paper / official model
    (lambda: EDSR(2), 1_369_859),                  # EDSR baseline x2 (1.37M)
    (lambda: EDSR(4), 1_517_571),                  # EDSR baseline x4 (1.52M)
    (lambda: FFANet(), 4_455_913),                 # FFA-Net (4.456M)
])
def test_parameter_counts_match_the_originals(make, count):
    assert count_params(make()) == count


def test_nafnet_gopro_width32_is_17_11M():
    assert round(count_params(NAFNet()) / 1e6, 2) == 17.11


def test_adm_256_uncond_has_552_81M_parameters_and_guided_diffusion_keys():
    with torch.device("meta"):
        m = ADMUNet(ADM_256_UNCOND)
    assert round(count_params(m) / 1e6, 2) == 552.81  # the DiffLoss paper's figure
    sd = m.state_dict()
    for k in ("time_embed.0.weight", "input_blocks.0.0.weight", "input_blocks.1.0.in_layers.2.weight",
              "input_blocks.3.0.in_layers.0.weight", "middle_block.1.qkv.weight", "output_blocks.17.0.skip_connection.weight",
              "out.2.weight"):
        assert k in sd, k
    assert tuple(sd["middle_block.1.qkv.weight"].shape) == (3072, 1024, 1)
    assert tuple(sd["out.2.weight"].shape) == (6, 256, 3, 3)


def test_restormer_shapes_and_bad_size():
    m = Restormer(**TINY)
    assert m(torch.rand(2, 3, 32, 40)).shape == (2, 3, 32, 40)
    with pytest.raises(ValueError, match="divisible by 8"):
        m(torch.rand(1, 3, 30, 32))


def test_textpromptir_uses_text_and_checks_it():
    torch.manual_seed(0)
    m = TextPromptIR(text_dim=12, **TINY)
    x = torch.rand(2, 3, 16, 16)
    z1, z2 = torch.randn(2, 12), torch.randn(2, 12)
    y1, y2 = m(x, text=z1), m(x, text=z2)
    assert not torch.allclose(y1, y2)  # the guidance changes the output
    y1.mean().backward()
    assert m.encoder_level1[0].attn.linear1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs text"):
        m(x)
    with pytest.raises(ValueError, match="text guidance must be"):
        m(x, text=torch.randn(2, 5))
    plain = TextPromptIR(use_text=False, **TINY)
    assert count_params(plain) == count_params(Restormer(**TINY))


def test_swinir_counts_shapes_and_windows():
    from irlib.models.swinir import SwinIR, shift_mask, window_partition, window_reverse

    assert count_params(SwinIR.classical(4)) == 11_900_199  # the SwinIR paper's 11.9M classical x4 model
    # lightweight: the release's counts; the paper's 878K/886K/897K leave out the 24 relative-position-bias
    # tables (24 x 225 x 6 = 32,400), see tests/test_release_keys.py
    light = {s: count_params(SwinIR.light(s)) for s in (2, 3, 4)}
    assert light == {2: 910_152, 3: 918_267, 4: 929_628}
    assert {s: round((n - 32_400) / 1e3) for s, n in light.items()} == {2: 878, 3: 886, 4: 897}
    x = torch.rand(2, 8, 12, 5)
    assert torch.equal(window_reverse(window_partition(x, 4), 4, 8, 12), x)
    m = shift_mask(8, 8, 4, 2, "cpu")
    assert m.shape == (4, 16, 16) and float(m[0].abs().sum()) == 0 and float(m[-1].min()) == -100
    net = SwinIR(3, dim=12, depths=(2,), heads=(2,), window=4)
    assert net(torch.rand(1, 3, 10, 13)).shape == (1, 3, 30, 39)  # padded to the window and cropped back


def test_dehazeformer_sizes_equal_published_and_soft_reconstruction():
    from irlib.models.dehazeformer import DehazeFormer, rln_affine_params

    nets = {n: getattr(DehazeFormer, n)() for n in "tsb"}
    assert {n: count_params(m) for n, m in nets.items()} == {"t": 687_404, "s": 1_284_884, "b": 2_517_612}
    for n, published in {"t": 0.686, "s": 1.283, "b": 2.514}.items():  # the paper's counts leave out RLN weight/bias
        assert round((count_params(nets[n]) - rln_affine_params(nets[n])) / 1e6, 3) == published
    m = DehazeFormer()
    x = torch.rand(1, 3, 30, 34)
    assert m(x).shape == x.shape
    with torch.no_grad():  # constant K and B: the soft reconstruction K * I - B + I
        m.patch_unembed.proj[0].weight.zero_(); m.patch_unembed.proj[0].bias.copy_(torch.tensor([0.0, 0, 0, 0]))
        assert torch.allclose(m(x), x)
        m.patch_unembed.proj[0].bias.copy_(torch.tensor([1.0, 0.5, 0.5, 0.5]))
        assert torch.allclose(m(x), 2 * x - 0.5)


def test_iat_matches_the_published_0_09M_and_starts_with_an_identity_global_branch():
    from irlib.models.iat import IAT

    m = IAT()
    assert count_params(m) == 91_154 and round(count_params(m) / 1e6, 2) == 0.09
    assert "global_net.generator.attn.q" in m.state_dict() and "local_net.mul_blocks.2.norm1.color" in m.state_dict()
    x = torch.rand(2, 3, 36, 52)
    m.eval()  # no stochastic depth, so the two passes below agree
    gamma, color = m.global_net(x)
    assert torch.allclose(gamma, torch.ones(2, 1)) and torch.allclose(color, torch.eye(3).expand(2, 3, 3))
    mul, add = m.local_net(x)
    y = m(x)
    assert y.shape == x.shape and torch.allclose(y, (x * mul + add).clamp(1e-8, 1.0))
    y.mean().backward()
    assert m.global_net.gamma_linear.weight.grad is not None


def test_griddehazenet_counts_and_shapes():
    from irlib.models.gridnet import GridDehazeNet

    m = GridDehazeNet()
    assert count_params(m) == 958_051
    assert round((count_params(m) - m.coefficient.numel()) / 1e6, 3) == 0.956  # the paper's count omits the fusion weights
    for k in ("rdb_module.2_4.conv_1x1.weight", "downsample_module.1_2.conv2.weight", "upsample_module.0_5.deconv.weight",
              "rdb_in.residual_dense_layers.3.conv.weight"):
        assert k in m.state_dict(), k
    x = torch.rand(1, 3, 30, 22)  # odd-ish sizes: the transposed convs are told the output size
    assert m(x).shape == x.shape and m(x).min() >= 0
    with pytest.raises(ValueError, match="even"):
        GridDehazeNet(width=5)


def test_msbdn_has_the_published_31_35M_parameters_and_back_projection_fusion():
    from irlib.models.msbdn import DFF, MSBDN

    m = MSBDN()
    assert count_params(m) == 31_353_061 and round(count_params(m) / 1e6, 2) == 31.35
    for k in ("conv_input.conv2d.weight", "fusion4.up_convs.3.deconv.weight", "fusion_1.down_convs.3.conv.weight",
              "dehaze.res17.relu.weight", "convd2x.conv2d.weight", "dense_1.2.conv2.conv2d.bias"):
        assert k in m.state_dict(), k
    small = MSBDN(base=4, res_blocks=1)
    x = torch.rand(1, 3, 48, 32)
    assert small(x).shape == x.shape
    with pytest.raises(ValueError, match="divisible by 16"):
        small(torch.rand(1, 3, 40, 40))
    # a DFF whose earlier feature equals the back-projection of the current one adds nothing
    dff = DFF(8, 1, encoder=True)
    cur = torch.rand(1, 8, 4, 4)
    with torch.no_grad():
        prev = dff.up_convs[0](cur)
        assert torch.allclose(dff(cur, [prev]), cur + dff.down_convs[0](torch.zeros_like(prev)))


def test_efderain_filter_equals_a_dilated_depthwise_conv_for_constant_kernels():
    from irlib.models.efderain import EfDeRain, dilated_pixel_filter

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 10, generator=g)
    w = torch.randn(3, 1, 3, 3, generator=g)
    per_pixel = w.view(1, 3, 9, 1, 1).expand(2, 3, 9, 12, 10)
    for rate in (1, 2, 3, 4):
        ref = torch.nn.functional.conv2d(x, w, padding=rate, dilation=rate, groups=3)
        assert torch.allclose(dilated_pixel_filter(x, per_pixel, rate), ref, atol=1e-6)
    m = EfDeRain()
    assert count_params(m) == 27_395_406  # the release's defaults; we know no published count to compare
    assert "conv8.conv1.4.weight" in m.state_dict() and m.outc.out_channels == 27
    small = EfDeRain(widths=(8, 8, 16, 16, 16))
    assert small.kernels(torch.rand(1, 3, 32, 48)).shape == (1, 3, 9, 32, 48)
    with pytest.raises(ValueError, match="divisible by 16"):
        small(torch.rand(1, 3, 20, 32))
