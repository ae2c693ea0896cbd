"""WGWS-Net (Zhu et al., CVPR 2023, "Learning weather-general and weather-specific features for image restoration
under multiple adverse weather conditions"), a comparison method that DINO-IR trained in its own multi-task
setting (DINO-IR Table 1, "WGWS").

Module and parameter names follow the authors' release (zhuyr97/WGWS-Net): the network is a three-scale U-Net
(``Encoder``/``Decoder`` of residual dense blocks ``layer1..layer6``, ``feat_extract``, ``Convs``, ``AFFs``,
``SCM1``/``SCM2``, ``FAM1``/``FAM2``), every conv wrapped as ``BasicConv.layer`` (GELU ``act``).

Two training stages, as the release defines them:

* Stage 1 (``networks/Network_Stage1.py``, :meth:`WGWS.stage1`): plain convs with biases, weather-general; every
  weather's images train the one network.
* Stage 2 (``networks/Network_Stage2_K1_Flag.py``, the paper's model: the README tests ``--flag K1``): every
  (non-transposed) conv keeps its stage-1 ``weight`` frozen, drops the bias, and gets per weather ``k`` a
  weather-specific residual ``Bk_residual`` (a 1x1 kernel, "K1"; ``residual="K3"`` gives the K3 file's full-size
  kernel) and a scalar ``Bk_indicator`` (init 0.15). With the weather flag ``f`` (one-hot), a conv computes
  ``conv(x, W) + sum_k f_k * [Bk_indicator >= 0.1] * conv(x, Bk_residual)``; the binarisation passes gradients
  straight through, and an L1 penalty on the indicators (``lam * sum |Bk_indicator| / 1000``) learns where
  weather-specific parameters are needed. Stage 2 trains only the ``B*`` parameters (one optimizer step per
  weather with its flag); the transposed convs keep their weights and biases.

:meth:`WGWS.load_stage1` loads a stage-1 state dict into a stage-2 network the release's way
(``load_state_dict(..., strict=False)``: stage 1's conv biases are dropped). Facts with file and line are in
``tests/fixtures/release/wgws.json`` under "training". The release has 3 weathers (B1..B3); ``weathers`` sets
another count (DINO-IR's multi-task setting has four degradation types). A ``flag`` may also be a (B, weathers)
tensor: one flag per sample (the release uses one flag per batch). Inputs must be a multiple of 4 in H and W.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

THRESHOLD = 0.1   # an indicator switches its weather-specific residual on at >= 0.1 (release: BinarizeIndictator)
INIT = 0.15       # indicators start on


class _Binarize(torch.autograd.Function):
    """``(indicator >= 0.1)`` forward, straight-through gradient backward."""

    @staticmethod
    def forward(ctx, indicator: torch.Tensor) -> torch.Tensor:
        return (indicator >= THRESHOLD).to(indicator.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def binarize(indicator: torch.Tensor) -> torch.Tensor:
    """The indicator's on/off value (straight-through estimator)."""
    return _Binarize.apply(indicator)


class SpecificConv(nn.Conv2d):
    """A conv with a frozen shared ``weight`` and, per weather ``k`` (1-based), ``Bk_residual`` and
    ``Bk_indicator``. ``weathers=0`` is stage 1's plain conv (trainable, with bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 weathers: int = 3, residual: str = "K1", bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        if residual not in ("K1", "K3"):
            raise ValueError(f"residual must be 'K1' (1x1) or 'K3' (full kernel), got {residual!r}")
        self.weathers, self.residual = int(weathers), residual
        shape = (out_channels, in_channels, 1, 1) if residual == "K1" else tuple(self.weight.shape)
        for k in range(1, self.weathers + 1):
            self.register_parameter(f"B{k}_residual", nn.Parameter(torch.zeros(shape)))
            self.register_parameter(f"B{k}_indicator", nn.Parameter(torch.full((1,), INIT)))
        if self.weathers:
            self.weight.requires_grad = False

    def forward(self, x: torch.Tensor, flag: torch.Tensor | None = None) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if not self.weathers:
            return y
        for k in range(self.weathers):
            res = getattr(self, f"B{k + 1}_residual")
            if self.residual == "K1":
                r = F.conv2d(x, res, self.bias, self.stride)
            else:
                r = F.conv2d(x, res, self.bias, self.stride, self.padding, self.dilation, self.groups)
            f = flag[k] if flag.dim() == 1 else flag[:, k].view(-1, 1, 1, 1)
            y = y + f * binarize(getattr(self, f"B{k + 1}_indicator")) * r
        return y


class BasicConv(nn.Module):
    """``layer`` (a :class:`SpecificConv`, or a ConvTranspose2d with bias when ``transpose``) then GELU
    (``act``) when ``relu``."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int, relu: bool = True,
                 transpose: bool = False, weathers: int = 3, residual: str = "K1"):
        super().__init__()
        self.transpose = transpose
        if transpose:
            self.layer = nn.ConvTranspose2d(in_channel, out_channel, kernel_size, padding=kernel_size // 2 - 1,
                                            stride=stride, bias=True)
        else:
            self.layer = SpecificConv(in_channel, out_channel, kernel_size, stride, kernel_size // 2, weathers,
                                      residual, bias=weathers == 0)
        self.act = nn.GELU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor, flag: torch.Tensor | None = None) -> torch.Tensor:
        return self.act(self.layer(x) if self.transpose else self.layer(x, flag))


class RDB_Conv(nn.Module):
    """3x3 BasicConv whose output is concatenated to its input."""

    def __init__(self, in_channels: int, grow_rate: int, **spec):
        super().__init__()
        self.conv = BasicConv(in_channels, grow_rate, 3, 1, relu=True, **spec)

    def forward(self, x: torch.Tensor, flag: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat((x, self.conv(x, flag)), 1)


class RDBlock(nn.Module):
    """Residual dense block: three densely connected convs (growth = width), 1x1 fusion ``LFF``, residual."""

    def __init__(self, in_channel: int, out_channel: int, **spec):
        super().__init__()
        g = in_channel
        self.conv0 = RDB_Conv(g, g, **spec)
        self.conv1 = RDB_Conv(2 * g, g, **spec)
        self.conv2 = RDB_Conv(3 * g, g, **spec)
        self.LFF = BasicConv(4 * g, out_channel, 1, 1, relu=False, **spec)

    def forward(self, x: torch.Tensor, flag: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv2(self.conv1(self.conv0(x, flag), flag), flag)
        return self.LFF(out, flag) + x


class RDStage(nn.Module):
    """``num_res`` RDBlocks named ``layer1..layerN`` (the release's EBlock/DBlock, fixed at 6)."""

    def __init__(self, channel: int, num_res: int = 6, **spec):
        super().__init__()
        self.num_res = num_res
        for i in range(1, num_res + 1):
            self.add_module(f"layer{i}", RDBlock(channel, channel, **spec))

    def forward(self, x: torch.Tensor, flag: torch.Tensor | None = None) -> torch.Tensor:
        for i in range(1, self.num_res + 1):
            x = getattr(self, f"layer{i}")(x, flag)
        return x


class AFF(nn.Module):
    """Fuse three scales: cat, 1x1 + GELU, 3x3."""

    def __init__(self, in_channel: int, out_channel: int, **spec):
        super().__init__()
        self.conv1 = BasicConv(in_channel, out_channel, 1, 1, relu=True, **spec)
        self.conv2 = BasicConv(out_channel, out_channel, 3, 1, relu=False, **spec)

    def forward(self, x1, x2, x4, flag: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv2(self.conv1(torch.cat([x1, x2, x4], dim=1), flag), flag)


class SCM(nn.Module):
    """Shallow convolutional module: features of a downscaled input (concatenated to it), then a 1x1."""

    def __init__(self, out_plane: int, **spec):
        super().__init__()
        self.layer1 = BasicConv(3, out_plane // 4, 3, 1, relu=True, **spec)
        self.layer2 = BasicConv(out_plane // 4, out_plane // 2, 1, 1, relu=True, **spec)
        self.layer3 = BasicConv(out_plane // 2, out_plane // 2, 3, 1, relu=True, **spec)
        self.layer4 = BasicConv(out_plane // 2, out_plane - 3, 1, 1, relu=True, **spec)
        self.conv = BasicConv(out_plane, out_plane, 1, 1, relu=False, **spec)

    def forward(self, x: torch.Tensor, flag: torch.Tensor | None = None) -> torch.Tensor:
        out = x
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = layer(out, flag)
        return self.conv(torch.cat([x, out], dim=1), flag)


class FAM(nn.Module):
    """Feature attention module: ``x1 + merge(x1 * x2)``."""

    def __init__(self, channel: int, **spec):
        super().__init__()
        self.merge = BasicConv(channel, channel, 3, 1, relu=False, **spec)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, flag: torch.Tensor | None = None) -> torch.Tensor:
        return x1 + self.merge(x1 * x2, flag)


class WGWS(nn.Module):
    """WGWS-Net. Defaults are the stage-2 K1 network of the release's settings 1 and 3 (``base_channel`` 18;
    setting 2 uses 20) with 3 weathers; ``weathers=0`` is the stage-1 network. ``forward(x, flag)``: ``flag``
    is a weather index, a one-hot sequence/tensor of length ``weathers``, or a (B, weathers) tensor; ``None``
    is the release's default ``[1, 0, 0]``."""

    def __init__(self, base_channel: int = 18, num_res: int = 6, weathers: int = 3, residual: str = "K1"):
        super().__init__()
        if base_channel < 2:
            raise ValueError(f"WGWS needs base_channel >= 2 (its SCM uses base_channel * 2 // 4 channels), got {base_channel}")
        self.weathers = int(weathers)
        spec = dict(weathers=self.weathers, residual=residual)
        c = base_channel
        self.Encoder = nn.ModuleList([RDStage(c, num_res, **spec), RDStage(2 * c, num_res, **spec),
                                      RDStage(4 * c, num_res, **spec)])
        self.feat_extract = nn.ModuleList([
            BasicConv(3, c, 3, 1, relu=True, **spec),
            BasicConv(c, 2 * c, 3, 2, relu=True, **spec),
            BasicConv(2 * c, 4 * c, 3, 2, relu=True, **spec),
            BasicConv(4 * c, 2 * c, 4, 2, relu=True, transpose=True, **spec),
            BasicConv(2 * c, c, 4, 2, relu=True, transpose=True, **spec),
            BasicConv(c, 3, 3, 1, relu=False, **spec)])
        self.Decoder = nn.ModuleList([RDStage(4 * c, num_res, **spec), RDStage(2 * c, num_res, **spec),
                                      RDStage(c, num_res, **spec)])
        self.Convs = nn.ModuleList([BasicConv(4 * c, 2 * c, 1, 1, relu=True, **spec),
                                    BasicConv(2 * c, c, 1, 1, relu=True, **spec)])
        self.AFFs = nn.ModuleList([AFF(7 * c, c, **spec), AFF(7 * c, 2 * c, **spec), AFF(7 * c, 4 * c, **spec)])
        self.FAM1, self.SCM1 = FAM(4 * c, **spec), SCM(4 * c, **spec)
        self.FAM2, self.SCM2 = FAM(2 * c, **spec), SCM(2 * c, **spec)

    @classmethod
    def release(cls, setting: int = 1, **kw) -> "WGWS":
        """The released stage-2 K1 network of a setting (base_channel 18 for settings 1 and 3, 20 for 2)."""
        if setting not in (1, 2, 3):
            raise ValueError(f"the release has settings 1, 2 and 3, got {setting}")
        return cls(base_channel=20 if setting == 2 else 18, **kw)

    @classmethod
    def stage1(cls, base_channel: int = 18, **kw) -> "WGWS":
        """The weather-general stage-1 network (plain convs with biases)."""
        return cls(base_channel=base_channel, weathers=0, **kw)

    @classmethod
    def tiny(cls, **kw) -> "WGWS":
        """A CPU smoke size with the same structure."""
        return cls(**{"base_channel": 4, "num_res": 1, **kw})

    # ----------------------------------------------------------------------------------------- stage-2 tools
    def indicators(self, k: int) -> list[nn.Parameter]:
        """Every ``Bk_indicator`` (weather ``k``, 1-based) in module order, as the release's getIndicators_Bk."""
        return [p for n, p in self.named_parameters() if n.endswith(f"B{k}_indicator")]

    def specific_parameters(self) -> list[nn.Parameter]:
        """The parameters stage 2 trains (names with B1/B2/..., as the release's training script selects)."""
        return [p for n, p in self.named_parameters() if n.rsplit(".", 1)[-1].startswith("B")]

    def freeze_general(self) -> "WGWS":
        """Stage 2's setting: only the weather-specific parameters require gradients."""
        specific = {id(p) for p in self.specific_parameters()}
        for p in self.parameters():
            p.requires_grad = id(p) in specific
        return self

    def indicator_penalty(self, k: int) -> torch.Tensor:
        """``sum |Bk_indicator| / 1000`` (the release multiplies it by ``lam``)."""
        return sum(p.abs() for p in self.indicators(k)).sum() / 1000

    def load_stage1(self, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load a stage-1 state dict as the release does (``strict=False``); returns (missing, unexpected):
        the weather-specific parameters stay at their initial values, stage 1's conv biases are dropped."""
        if not self.weathers:
            raise ValueError("load_stage1 is for a stage-2 network (weathers > 0)")
        res = self.load_state_dict(state, strict=False)
        bad = [k for k in res.missing_keys if not k.rsplit(".", 1)[-1].startswith("B")]
        if bad:
            raise ValueError(f"not a stage-1 state dict of this size: missing {bad[:5]}")
        return list(res.missing_keys), list(res.unexpected_keys)

    def flag_tensor(self, flag, x: torch.Tensor) -> torch.Tensor:
        """``flag`` as a float tensor of shape (weathers,) or (B, weathers) on ``x``'s device."""
        if flag is None:
            flag = 0
        if isinstance(flag, int):
            if not 0 <= flag < max(self.weathers, 1):
                raise ValueError(f"weather index {flag} out of range for {self.weathers} weathers")
            t = torch.zeros(self.weathers, dtype=x.dtype, device=x.device)
            if self.weathers:
                t[flag] = 1
            return t
        t = torch.as_tensor(flag).to(device=x.device, dtype=x.dtype)
        if t.shape[-1] != self.weathers or t.dim() not in (1, 2) or (t.dim() == 2 and t.shape[0] != x.shape[0]):
            raise ValueError(f"flag must have shape ({self.weathers},) or ({x.shape[0]}, {self.weathers}), "
                             f"got {tuple(t.shape)}")
        return t

    def forward(self, x: torch.Tensor, flag=None) -> torch.Tensor:
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f"WGWS needs H and W divisible by 4, got {tuple(x.shape[-2:])}")
        f = self.flag_tensor(flag, x)
        x_2 = F.interpolate(x, scale_factor=0.5)
        x_4 = F.interpolate(x_2, scale_factor=0.5)
        z2, z4 = self.SCM2(x_2, f), self.SCM1(x_4, f)

        res1 = self.Encoder[0](self.feat_extract[0](x, f), f)
        z = self.FAM2(self.feat_extract[1](res1, f), z2, f)
        res2 = self.Encoder[1](z, f)
        z = self.FAM1(self.feat_extract[2](res2, f), z4, f)
        z = self.Encoder[2](z, f)

        z12 = F.interpolate(res1, scale_factor=0.5)
        z14 = F.interpolate(res1, scale_factor=0.25)
        z21 = F.interpolate(res2, scale_factor=2)
        z24 = F.interpolate(res2, scale_factor=0.5)
        z42 = F.interpolate(z, scale_factor=2)
        z41 = F.interpolate(z42, scale_factor=2)
        z = self.AFFs[2](z14, z24, z, f)
        res2 = self.AFFs[1](z12, res2, z42, f)
        res1 = self.AFFs[0](res1, z21, z41, f)

        z = self.feat_extract[3](self.Decoder[0](z, f), f)
        z = self.Decoder[1](self.Convs[0](torch.cat([z, res2], dim=1), f), f)
        z = self.feat_extract[4](z, f)
        z = self.Decoder[2](self.Convs[1](torch.cat([z, res1], dim=1), f), f)
        return self.feat_extract[5](z, f) + x


def specific_usage(model: WGWS) -> dict[int, float]:
    """Per weather, the fraction of convs whose weather-specific residual is switched on."""
    return {k: float(torch.stack([binarize(p.detach()) for p in model.indicators(k)]).mean())
            for k in range(1, model.weathers + 1)}

