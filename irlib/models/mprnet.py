"""MPRNet (Zamir et al., CVPR 2021), a comparison method of DINO-IR's Table 1 (all-in-one restoration), which
DINO-IR ran in its own setting.

Module and parameter names follow the authors' release (swz30/MPRNet, ``Deraining/MPRNet.py``; the
``Denoising`` and ``Deblurring`` copies are the same network with other default widths, see the named
constructors): ``shallow_feat1..3``, ``stage1_encoder``/``stage1_decoder``, ``stage2_encoder``/``stage2_decoder``
(with ``csff_enc*``/``csff_dec*`` cross-stage fusion convs), ``stage3_orsnet`` (``orb1..3``, ``up_enc*``,
``up_dec*``, ``conv_enc*``, ``conv_dec*``), ``sam12``/``sam23``, ``concat12``/``concat23`` and ``tail``; a
channel-attention block holds ``CA.conv_du`` then ``body``.

The release builds ONE ``nn.PReLU`` and hands it to every channel-attention block, so the whole network has a
single learned PReLU slope. Its ``named_parameters`` list it once (``shallow_feat1.1.body.1.weight``) while its
``state_dict`` repeats it under every other block's ``body.1.weight``. irlib registers the PReLU once, under
that first name, and puts a parameter-free :class:`SharedPReLU` view in every other block: the state dict
writes the same value under the release's other names and loading consumes them, so released checkpoints load
with ``strict=True`` and saved ones look like the release's. ``tests/test_release_dinoir_comparisons_a.py``
checks keys, shapes and outputs against facts taken from the release.

``forward`` returns the release's list ``[stage3, stage2, stage1]``: ``outputs[0]`` (stage 3 plus the input)
is the restored image; the release's loss supervises all three. Inputs must have H and W divisible by 8 (the
network splits the image into 2 and 4 patches and halves each patch twice); pad to a multiple of 8 and crop.
"""
from __future__ import annotations

import torch
import torch.nn as nn

PAD = 8  # H, W multiple the forward pass needs


def _conv(cin: int, cout: int, k: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class SharedPReLU(nn.Module):
    """A view of a PReLU registered elsewhere in the network, with no parameter of its own.

    In the state dict it stands for the release's repeated key (``<prefix>weight``, the shared slope); when a
    state dict is loaded that key is consumed (it must equal the slope loaded under the first name)."""

    def __init__(self, act: nn.PReLU):
        super().__init__()
        self._act = (act,)  # a tuple, so that the module is not registered a second time

    @property
    def act(self) -> nn.PReLU:
        return self._act[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: D401 - torch hook signature
        w = self.act.weight
        destination[prefix + "weight"] = w if keep_vars else w.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        if key not in state_dict:
            if strict:
                missing_keys.append(key)
        else:
            value, w = state_dict[key], self.act.weight
            if tuple(value.shape) != tuple(w.shape):
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)}, "
                                  f"the shared PReLU has shape {tuple(w.shape)}")
            elif not (value.is_meta or w.is_meta) and not torch.equal(value.to(w), w.detach()):
                error_msgs.append(f"{key} differs from the shared PReLU slope loaded before it: MPRNet has one "
                                  f"PReLU, every block's copy must hold the same value")
        if strict:
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k != key)


class _Act:
    """Hands out the network's single PReLU: the real module the first time, :class:`SharedPReLU` views after."""

    def __init__(self):
        self.prelu, self.used = nn.PReLU(), False

    def __call__(self) -> nn.Module:
        if self.used:
            return SharedPReLU(self.prelu)
        self.used = True
        return self.prelu


class CALayer(nn.Module):
    """Channel attention: global average pool, 1x1 down (``reduction``), ReLU, 1x1 up, sigmoid, rescale."""

    def __init__(self, c: int, reduction: int, bias: bool = False):
        super().__init__()
        self.conv_du = nn.Sequential(nn.Conv2d(c, c // reduction, 1, bias=bias), nn.ReLU(inplace=True),
                                     nn.Conv2d(c // reduction, c, 1, bias=bias), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean(dim=(-2, -1), keepdim=True))


class CAB(nn.Module):
    """Channel-attention block: conv, PReLU, conv, channel attention, plus the input."""

    def __init__(self, c: int, k: int, reduction: int, bias: bool, act: _Act):
        super().__init__()
        self.CA = CALayer(c, reduction, bias)
        self.body = nn.Sequential(_conv(c, c, k, bias), act(), _conv(c, c, k, bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.CA(self.body(x)) + x


def _cabs(n: int, c: int, k: int, reduction: int, bias: bool, act: _Act) -> nn.Sequential:
    return nn.Sequential(*[CAB(c, k, reduction, bias, act) for _ in range(n)])


class SAM(nn.Module):
    """Supervised attention module: predicts the stage's image (``conv2(x) + input``) and gates the features
    with ``sigmoid(conv3(image))``."""

    def __init__(self, c: int, k: int, bias: bool):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = _conv(c, c, k, bias), _conv(c, 3, k, bias), _conv(3, c, k, bias)

    def forward(self, x: torch.Tensor, x_img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.conv2(x) + x_img
        return self.conv1(x) * torch.sigmoid(self.conv3(img)) + x, img


class DownSample(nn.Module):
    """Halve the resolution, then ``c -> c + s`` channels (release key ``down.1``)."""

    def __init__(self, c: int, s: int):
        super().__init__()
        self.down = nn.Sequential(nn.Upsample(scale_factor=0.5, mode="bilinear", align_corners=False),
                                  nn.Conv2d(c, c + s, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x)


class UpSample(nn.Module):
    """Double the resolution, then ``c + s -> c`` channels (release key ``up.1``)."""

    def __init__(self, c: int, s: int):
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                nn.Conv2d(c + s, c, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class SkipUpSample(UpSample):
    """:class:`UpSample` plus a skip connection."""

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.up(x) + skip


class Encoder(nn.Module):
    """Three-level encoder of 2 CABs per level (widths ``n, n+s, n+2s``); with ``csff`` it adds 1x1-projected
    encoder and decoder features of the previous stage at each level."""

    def __init__(self, n: int, k: int, reduction: int, act: _Act, bias: bool, s: int, csff: bool):
        super().__init__()
        widths = (n, n + s, n + 2 * s)
        self.encoder_level1, self.encoder_level2, self.encoder_level3 = (
            _cabs(2, c, k, reduction, bias, act) for c in widths)
        self.down12, self.down23 = DownSample(n, s), DownSample(n + s, s)
        self.csff = csff
        if csff:
            for i, c in enumerate(widths, 1):
                setattr(self, f"csff_enc{i}", nn.Conv2d(c, c, 1, bias=bias))
            for i, c in enumerate(widths, 1):
                setattr(self, f"csff_dec{i}", nn.Conv2d(c, c, 1, bias=bias))

    def _fuse(self, i: int, h: torch.Tensor, enc: list | None, dec: list | None) -> torch.Tensor:
        if enc is None or dec is None:
            return h
        return h + getattr(self, f"csff_enc{i + 1}")(enc[i]) + getattr(self, f"csff_dec{i + 1}")(dec[i])

    def forward(self, x: torch.Tensor, enc: list | None = None, dec: list | None = None) -> list[torch.Tensor]:
        e1 = self._fuse(0, self.encoder_level1(x), enc, dec)
        e2 = self._fuse(1, self.encoder_level2(self.down12(e1)), enc, dec)
        e3 = self._fuse(2, self.encoder_level3(self.down23(e2)), enc, dec)
        return [e1, e2, e3]


class Decoder(nn.Module):
    """Three-level decoder of 2 CABs per level; skips pass through a CAB (``skip_attn1/2``)."""

    def __init__(self, n: int, k: int, reduction: int, act: _Act, bias: bool, s: int):
        super().__init__()
        self.decoder_level1, self.decoder_level2, self.decoder_level3 = (
            _cabs(2, c, k, reduction, bias, act) for c in (n, n + s, n + 2 * s))
        self.skip_attn1 = CAB(n, k, reduction, bias, act)
        self.skip_attn2 = CAB(n + s, k, reduction, bias, act)
        self.up21, self.up32 = SkipUpSample(n, s), SkipUpSample(n + s, s)

    def forward(self, outs: list[torch.Tensor]) -> list[torch.Tensor]:
        e1, e2, e3 = outs
        d3 = self.decoder_level3(e3)
        d2 = self.decoder_level2(self.up32(d3, self.skip_attn2(e2)))
        d1 = self.decoder_level1(self.up21(d2, self.skip_attn1(e1)))
        return [d1, d2, d3]


class ORB(nn.Module):
    """Original-resolution block: ``num_cab`` CABs and a conv (no bias), plus the input."""

    def __init__(self, c: int, k: int, reduction: int, act: _Act, bias: bool, num_cab: int):
        super().__init__()
        self.body = nn.Sequential(*[CAB(c, k, reduction, bias, act) for _ in range(num_cab)], _conv(c, c, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ORSNet(nn.Module):
    """Stage 3: three ORBs at full resolution, each followed by stage 2's encoder/decoder features of one level
    (upsampled to full resolution, 1x1-projected to ``n + o`` channels)."""

    def __init__(self, n: int, o: int, k: int, reduction: int, act: _Act, bias: bool, s: int, num_cab: int):
        super().__init__()
        self.orb1, self.orb2, self.orb3 = (ORB(n + o, k, reduction, act, bias, num_cab) for _ in range(3))
        self.up_enc1, self.up_dec1 = UpSample(n, s), UpSample(n, s)
        self.up_enc2 = nn.Sequential(UpSample(n + s, s), UpSample(n, s))
        self.up_dec2 = nn.Sequential(UpSample(n + s, s), UpSample(n, s))
        for i in (1, 2, 3):
            setattr(self, f"conv_enc{i}", nn.Conv2d(n, n + o, 1, bias=bias))
        for i in (1, 2, 3):
            setattr(self, f"conv_dec{i}", nn.Conv2d(n, n + o, 1, bias=bias))

    def forward(self, x: torch.Tensor, enc: list[torch.Tensor], dec: list[torch.Tensor]) -> torch.Tensor:
        x = self.orb1(x) + self.conv_enc1(enc[0]) + self.conv_dec1(dec[0])
        x = self.orb2(x) + self.conv_enc2(self.up_enc1(enc[1])) + self.conv_dec2(self.up_dec1(dec[1]))
        return self.orb3(x) + self.conv_enc3(self.up_enc2(enc[2])) + self.conv_dec3(self.up_dec2(dec[2]))


class MPRNet(nn.Module):
    """Three-stage MPRNet. Defaults are the release's deraining model (``n_feat=40``, 3,637,249 parameters).

    ``forward(x)`` returns ``[restored, stage2, stage1]`` (all full-size images); ``restored`` is the output.
    """

    def __init__(self, in_c: int = 3, out_c: int = 3, n_feat: int = 40, scale_unetfeats: int = 20,
                 scale_orsnetfeats: int = 16, num_cab: int = 8, kernel_size: int = 3, reduction: int = 4,
                 bias: bool = False):
        super().__init__()
        n, s, o, k = n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size
        act = _Act()
        self.shallow_feat1, self.shallow_feat2, self.shallow_feat3 = (
            nn.Sequential(_conv(in_c, n, k, bias), CAB(n, k, reduction, bias, act)) for _ in range(3))
        self.stage1_encoder = Encoder(n, k, reduction, act, bias, s, csff=False)
        self.stage1_decoder = Decoder(n, k, reduction, act, bias, s)
        self.stage2_encoder = Encoder(n, k, reduction, act, bias, s, csff=True)
        self.stage2_decoder = Decoder(n, k, reduction, act, bias, s)
        self.stage3_orsnet = ORSNet(n, o, k, reduction, act, bias, s, num_cab)
        self.sam12, self.sam23 = SAM(n, 1, bias), SAM(n, 1, bias)
        self.concat12 = _conv(2 * n, n, k, bias)
        self.concat23 = _conv(2 * n, n + o, k, bias)
        self.tail = _conv(n + o, out_c, k, bias)

    @classmethod
    def deraining(cls, **kw) -> "MPRNet":
        """The release's ``Deraining/MPRNet.py`` defaults (n_feat 40, unet +20, orsnet +16): 3.64M."""
        return cls(**kw)

    @classmethod
    def denoising(cls, **kw) -> "MPRNet":
        """The release's ``Denoising/MPRNet.py`` defaults (n_feat 80, unet +48, orsnet +32): 15.74M."""
        return cls(**{"n_feat": 80, "scale_unetfeats": 48, "scale_orsnetfeats": 32, **kw})

    @classmethod
    def deblurring(cls, **kw) -> "MPRNet":
        """The release's ``Deblurring/MPRNet.py`` defaults (n_feat 96, unet +48, orsnet +32): 20.13M."""
        return cls(**{"n_feat": 96, "scale_unetfeats": 48, "scale_orsnetfeats": 32, **kw})

    @classmethod
    def tiny(cls, **kw) -> "MPRNet":
        """n_feat 8 (+4, +4), 2 CABs per ORB: the same code path for CPU smoke runs."""
        return cls(**{"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "num_cab": 2, **kw})

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """The restored image alone (``forward(x)[0]``)."""
        return self(x)[0]

    def forward(self, x3_img: torch.Tensor) -> list[torch.Tensor]:
        h, w = x3_img.shape[-2:]
        if h % PAD or w % PAD:
            raise ValueError(f"MPRNet needs H and W divisible by {PAD}, got {h}x{w}: pad the input and crop")
        top, bot = x3_img[..., : h // 2, :], x3_img[..., h // 2:, :]
        quads = [p for half in (top, bot) for p in (half[..., : w // 2], half[..., w // 2:])]
        # stage 1: four quarter patches through a shared encoder, halves decoded
        f1 = [self.stage1_encoder(self.shallow_feat1(q)) for q in quads]
        feat1 = [[torch.cat(lr, 3) for lr in zip(f1[2 * i], f1[2 * i + 1])] for i in range(2)]
        res1 = [self.stage1_decoder(f) for f in feat1]
        sam1 = [self.sam12(r[0], half) for r, half in zip(res1, (top, bot))]
        stage1_img = torch.cat([img for _, img in sam1], 2)
        # stage 2: two half patches, fused with stage 1's features
        feat2_halves = [self.stage2_encoder(self.concat12(torch.cat([self.shallow_feat2(half), samf], 1)), f, r)
                        for half, (samf, _), f, r in zip((top, bot), sam1, feat1, res1)]
        feat2 = [torch.cat(tb, 2) for tb in zip(*feat2_halves)]
        res2 = self.stage2_decoder(feat2)
        x3_samfeats, stage2_img = self.sam23(res2[0], x3_img)
        # stage 3: full resolution
        x3 = self.concat23(torch.cat([self.shallow_feat3(x3_img), x3_samfeats], 1))
        x3 = self.stage3_orsnet(x3, feat2, res2)
        return [self.tail(x3) + x3_img, stage2_img, stage1_img]
