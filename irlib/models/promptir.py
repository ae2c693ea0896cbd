"""PromptIR (Potlapalli et al., NeurIPS 2023), a comparison method of DINO-IR's Table 1 (all-in-one
restoration), which DINO-IR ran in its own setting.

Module and parameter names follow the authors' release (va1shn9v/PromptIR, ``net/model.py``, the model that
``train.py``/``test.py`` build: ``PromptIR(decoder=True)``): a Restormer U-Net (``patch_embed``,
``encoder_level1..3``, ``latent``, ``down*``/``up*``, ``reduce_chan_level3/2``, ``decoder_level3..1``,
``refinement``, ``output``; blocks from :mod:`irlib.models.restormer`, which shares the release's block names)
whose decoder levels are each preceded by a prompt block: ``prompt3/2/1`` (:class:`PromptGenBlock`:
``prompt_param``, ``linear_layer``, ``conv3x3``) generates a prompt from the features, it is concatenated to
them, passes a transformer block (``noise_level3/2/1``) and a 1x1 conv back to the level's width
(``reduce_noise_level3/2/1``). With the defaults the parameter count is the release's 35,592,263.

The release's channel numbers are literals written for ``dim=48`` and prompt widths 64/128/320; here they are
the formulas that equal those literals at the release's configuration, so smaller configurations work too.
The release also builds modules its forward never uses (``chnl_reduce1..3``, ``reduce_noise_channel_1..3``,
215,296 parameters in all); they are kept (``leftover`` widths) so that released checkpoints load with
``strict=True`` and the parameter count is the release's. ``tests/test_release_dinoir_comparisons_a.py`` checks
keys, shapes and outputs against facts taken from the release.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .restormer import Down, PatchEmbed, TransformerBlock, Up

PAD = 8  # three 2x downsamplings


class PromptGenBlock(nn.Module):
    """Prompt generation: ``prompt_len`` learned prompts of shape (``prompt_dim``, ``size``, ``size``) mixed with
    softmax weights predicted (``linear_layer``) from the features' global average, resized bilinearly to the
    feature size, then a 3x3 conv without bias."""

    def __init__(self, prompt_dim: int = 128, prompt_len: int = 5, prompt_size: int = 96, lin_dim: int = 192):
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)  # (B, prompt_len)
        prompt = torch.einsum("bl,lchw->bchw", weights, self.prompt_param[0])
        prompt = F.interpolate(prompt, x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv3x3(prompt)


class PromptIR(nn.Module):
    """PromptIR with prompt blocks in the decoder (the release's ``decoder=True``, the only form its forward
    runs). ``prompt_dims``/``prompt_sizes`` are those of ``prompt1..3`` (levels 1..3, i.e. 2x, 4x, 8x down);
    ``leftover`` are the output widths of the release's unused ``chnl_reduce1..3``."""

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66, bias: bool = False,
                 ln_bias: bool = True, prompt_dims: Sequence[int] = (64, 128, 320),
                 prompt_sizes: Sequence[int] = (64, 32, 16), prompt_len: int = 5,
                 leftover: Sequence[int] = (64, 128, 256)):
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(f"PromptIR needs 4 block counts and 4 head counts, got {tuple(num_blocks)} and "
                             f"{tuple(heads)}")
        if len(prompt_dims) != 3 or len(prompt_sizes) != 3 or len(leftover) != 3:
            raise ValueError("PromptIR needs 3 prompt_dims, 3 prompt_sizes and 3 leftover widths")
        d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
        p1, p2, p3 = prompt_dims
        self.dims = (d1, d2, d3, d4)

        def block(c: int, h: int) -> TransformerBlock:
            return TransformerBlock(c, h, ffn_expansion_factor, bias, ln_bias)

        def stage(c: int, h: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[block(c, h) for _ in range(n)])

        def conv1(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 1, bias=bias)

        self.patch_embed = PatchEmbed(inp_channels, d1)
        self.prompt1 = PromptGenBlock(p1, prompt_len, prompt_sizes[0], d2)
        self.prompt2 = PromptGenBlock(p2, prompt_len, prompt_sizes[1], d3)
        self.prompt3 = PromptGenBlock(p3, prompt_len, prompt_sizes[2], d4)
        # built by the release, never used in its forward
        self.chnl_reduce1, self.chnl_reduce2, self.chnl_reduce3 = (
            conv1(p, r) for p, r in zip(prompt_dims, leftover))
        self.reduce_noise_channel_1 = conv1(d1 + leftover[0], d1)
        self.encoder_level1 = stage(d1, heads[0], num_blocks[0])
        self.down1_2 = Down(d1)
        self.reduce_noise_channel_2 = conv1(d2 + leftover[1], d2)
        self.encoder_level2 = stage(d2, heads[1], num_blocks[1])
        self.down2_3 = Down(d2)
        self.reduce_noise_channel_3 = conv1(d3 + leftover[2], d3)
        self.encoder_level3 = stage(d3, heads[2], num_blocks[2])
        self.down3_4 = Down(d3)
        self.latent = stage(d4, heads[3], num_blocks[3])
        self.up4_3 = Up(d3)  # after reduce_noise_level3 the latent has d3 channels: up to d2
        self.reduce_chan_level3 = conv1(d2 + d3, d3)
        self.noise_level3 = block(d4 + p3, heads[2])
        self.reduce_noise_level3 = conv1(d4 + p3, d3)
        self.decoder_level3 = stage(d3, heads[2], num_blocks[2])
        self.up3_2 = Up(d3)
        self.reduce_chan_level2 = conv1(d3, d2)
        self.noise_level2 = block(d3 + p2, heads[2])
        self.reduce_noise_level2 = conv1(d3 + p2, d3)
        self.decoder_level2 = stage(d2, heads[1], num_blocks[1])
        self.up2_1 = Up(d2)
        self.noise_level1 = block(d2 + p1, heads[2])
        self.reduce_noise_level1 = conv1(d2 + p1, d2)
        self.decoder_level1 = stage(d2, heads[0], num_blocks[0])
        self.refinement = stage(d2, heads[0], num_refinement_blocks)
        self.output = nn.Conv2d(d2, out_channels, 3, padding=1, bias=bias)

    @classmethod
    def tiny(cls, **kw) -> "PromptIR":
        """dim 8, one block per level, prompts 8/8/16 wide: the same code path for CPU smoke runs."""
        return cls(**{"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1,
                      "prompt_dims": (8, 8, 16), "prompt_sizes": (16, 8, 4), "leftover": (8, 8, 8), **kw})

    @staticmethod
    def _prompted(h: torch.Tensor, prompt: nn.Module, noise: nn.Module, reduce: nn.Module) -> torch.Tensor:
        return reduce(noise(torch.cat([h, prompt(h)], 1)))

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        h0, w0 = inp_img.shape[-2:]
        if h0 % PAD or w0 % PAD:
            raise ValueError(f"PromptIR needs H and W divisible by {PAD}, got {h0}x{w0}: pad the input and crop")
        e1 = self.encoder_level1(self.patch_embed(inp_img))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        lat = self._prompted(self.latent(self.down3_4(e3)), self.prompt3, self.noise_level3, self.reduce_noise_level3)
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), e3], 1)))
        d3 = self._prompted(d3, self.prompt2, self.noise_level2, self.reduce_noise_level2)
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1)))
        d2 = self._prompted(d2, self.prompt1, self.noise_level1, self.reduce_noise_level1)
        d1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(d2), e1], 1)))
        return self.output(d1) + inp_img
