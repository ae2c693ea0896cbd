"""DnCNN (Zhang et al., TIP 2017), a comparison method of DINO-IR's Table 1 (all-in-one restoration), which
DINO-IR ran in its own setting.

Module and parameter names follow KAIR's release (cszn/KAIR, ``models/network_dncnn.py`` with
``models/basicblock.py``): one flat ``nn.Sequential`` named ``model`` holding, in order, the head convolution
and its activation, ``nb - 2`` body units (convolution, batch norm for ``act_mode='BR'``, activation) and the
tail convolution, so the keys are ``model.0.weight``, ``model.2.weight``, ``model.3.running_mean``, ... The
network predicts the noise and returns ``x - noise`` (residual learning).

KAIR's batch norm uses ``momentum=0.9`` and ``eps=1e-4`` (PyTorch's momentum: the running statistics move 90%
of the way to each batch's). Training uses ``act_mode='BR'``; KAIR's released checkpoints
(``dncnn_color_blind.pth`` ...) are stored with the batch norms merged into the convolutions, i.e. for
``act_mode='R'``: :meth:`DnCNN.merge_bn` performs that conversion. ``tests/test_release_dinoir_comparisons_a.py``
checks keys, shapes, buffers and outputs against facts taken from the release.
"""
from __future__ import annotations

import torch
import torch.nn as nn

#: KAIR's batch-norm settings (basicblock.conv, mode 'B')
BN_MOMENTUM, BN_EPS = 0.9, 1e-4


def _act(code: str) -> nn.Module:
    if code == "R":
        return nn.ReLU(inplace=True)
    if code == "L":
        return nn.LeakyReLU(0.2, inplace=True)
    raise ValueError(f"DnCNN activation must be 'R' (ReLU) or 'L' (LeakyReLU 0.2), got {code!r}")


class DnCNN(nn.Module):
    """Plain CNN denoiser: ``nb`` 3x3 convolutions of width ``nc``; returns ``x - model(x)``.

    ``act_mode``: ``'BR'`` (batch norm + ReLU in the body, the training form), ``'R'`` (no batch norm: the form
    of KAIR's released, BN-merged checkpoints); ``'L'``/``'BL'`` use LeakyReLU(0.2) instead of ReLU.
    Any input size works (no padding needed).
    """

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nc: int = 64, nb: int = 20, act_mode: str = "BR"):
        super().__init__()
        if act_mode not in ("R", "L", "BR", "BL"):
            raise ValueError(f"act_mode must be one of R, L, BR, BL; got {act_mode!r}")
        if nb < 2:
            raise ValueError(f"DnCNN needs at least 2 convolutions (head and tail), got nb={nb}")
        self.in_nc, self.out_nc, self.nc, self.nb, self.act_mode = in_nc, out_nc, nc, nb, act_mode
        layers: list[nn.Module] = [nn.Conv2d(in_nc, nc, 3, padding=1), _act(act_mode[-1])]
        for _ in range(nb - 2):
            layers.append(nn.Conv2d(nc, nc, 3, padding=1))
            if act_mode.startswith("B"):
                layers.append(nn.BatchNorm2d(nc, momentum=BN_MOMENTUM, eps=BN_EPS))
            layers.append(_act(act_mode[-1]))
        layers.append(nn.Conv2d(nc, out_nc, 3, padding=1))
        self.model = nn.Sequential(*layers)

    @classmethod
    def color_blind(cls, **kw) -> "DnCNN":
        """CDnCNN-B: colour, one model for all noise levels, 20 layers (KAIR's ``dncnn_color_blind``)."""
        return cls(**{"in_nc": 3, "out_nc": 3, "nc": 64, "nb": 20, **kw})

    @classmethod
    def color_s(cls, **kw) -> "DnCNN":
        """Colour DnCNN with 17 layers (the depth of DnCNN-S, KAIR's ``train_dncnn.json`` default ``nb``)."""
        return cls(**{"in_nc": 3, "out_nc": 3, "nc": 64, "nb": 17, **kw})

    @classmethod
    def gray(cls, **kw) -> "DnCNN":
        """Grayscale DnCNN-S, 17 layers (KAIR's ``dncnn_15/25/50``)."""
        return cls(**{"in_nc": 1, "out_nc": 1, "nc": 64, "nb": 17, **kw})

    @classmethod
    def tiny(cls, **kw) -> "DnCNN":
        """16 features, 5 layers, with batch norm: the same code path for CPU smoke runs."""
        return cls(**{"in_nc": 3, "out_nc": 3, "nc": 16, "nb": 5, **kw})

    def merge_bn(self) -> "DnCNN":
        """A new network without batch norms computing what this one computes in eval mode (each BN folded into
        the convolution before it): the form in which KAIR releases its checkpoints."""
        if not self.act_mode.startswith("B"):
            raise ValueError("merge_bn needs a network with batch norms (act_mode 'BR' or 'BL')")
        merged = DnCNN(self.in_nc, self.out_nc, self.nc, self.nb, self.act_mode[-1]).to(self.model[0].weight)
        seq = list(self.model)
        pairs = [(m, seq[i + 1] if i + 1 < len(seq) and isinstance(seq[i + 1], nn.BatchNorm2d) else None)
                 for i, m in enumerate(seq) if isinstance(m, nn.Conv2d)]
        targets = [m for m in merged.model if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for (conv, bn), dst in zip(pairs, targets):
                w, b = conv.weight, conv.bias
                if bn is not None:
                    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    w, b = w * s[:, None, None, None], (b - bn.running_mean) * s + bn.bias
                dst.weight.copy_(w)
                dst.bias.copy_(b)
        return merged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.model(x)
