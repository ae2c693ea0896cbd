"""RCD-Net, the rain convolutional dictionary network (Wang et al., CVPR 2020): a deraining baseline DiffLoss
retrains (Table 1, Rain100H).

The rainy image O is modelled as background B plus rain C (x) M: ``num_m`` rain maps M convolved with a
dictionary of 9x9 rain kernels C. The network unrolls proximal gradient descent on that model for ``stages``
stages. An initial stage estimates B0 (and ``num_z`` auxiliary channels Z) with a proximal ResNet from O and a
3x3-filtered copy of O; then every stage takes a gradient step on M (transposed conv with C of the residual
rain, step eta_M), a proximal ResNet for M (four residual conv-BN blocks, then a learned soft threshold), a
gradient step on B (step eta_B) and a proximal ResNet for [B, Z]; a last proximal net refines [B, Z]. Every
conv with C divides it by 10, every step size by 10, as released.

Release facts (``RCDNet_code/for_syn/src/model/rcdnet.py``, config from ``option.py``: stages 17, num_m 32,
num_z 32, inputs in [0, 255]):

* The kernel dictionary starts from ``init_kernel.mat``: 32 elongated 9x9 streak kernels, the same for R, G
  and B. The release's MATLAB script ``init_rain_kernel.m`` describes such kernels (12 thin ones, 20 wider
  ones); :func:`rain_kernels` computes exactly that formula and is irlib's default. The shipped .mat was
  evidently made with randomised widths and dead zones instead (its kernel 1 has the script's length 2.75 but
  a width of about 0.128 rather than 0.25, and kernels 5, 7, 9 have flat centres the script's parameters
  cannot give), so for the release's exact starting point pass ``rain_kernel=<path to init_kernel.mat>``
  (a ``.pt`` tensor of shape (3, num_m, 9, 9) also works). irlib does not ship the file.
* Several parameters are ``expand()`` views of one tensor, so in the release (trained with PyTorch 1.x) they
  are one shared value: one kernel dictionary for every stage (``weight0`` and all of ``conv``), one M step
  (``eta1`` and every row of ``eta11``), one B step (``eta2``, ``eta12``), one 3x3 filter for every channel of
  ``w_z_f`` and one threshold per M-net for all its channels (``*.tau``). ``tied=True`` (default) reproduces
  that: those values are single parameters, and ``state_dict()`` writes them into every copy so the keys and
  shapes are the release's and release checkpoints load with ``strict=True``. ``tied=False`` gives every copy
  its own value (what the same code means with untied tensors; the forward reads ``conv[1]`` as released).
* ``mnet`` is built but never used in the forward (kept for the checkpoint keys; it gets no gradient).
* The state dict holds 3,166,355 values (stages 17); with ``tied=True`` the network has 3,040,494 distinct
  parameters. The release's training loss supervises every stage (see :meth:`RCDNet.forward_stages`).

``forward`` takes (B, 3, H, W) in [0, 1] of any size, scales it by ``rgb_range`` (255, as released), and
returns the last stage's background divided by ``rgb_range`` (not clamped).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TINY = dict(stages=3, num_m=4, num_z=4)


def rain_kernels(num: int = 32, size: int = 9, channels: int = 3) -> torch.Tensor:
    """The rain-kernel dictionary of the release's ``init_rain_kernel.m``, (channels, num, size, size).

    Kernel i (1-based) is an elongated Gaussian exp(-(x'^2 + (y'/L)^2) / (2 s^2)) on the integer grid
    -r..r (r = (size-1)/2), where x' and y' are the offsets with an inner dead zone of round(r * inner) removed
    (|x'| = max(|x|, d) - d), stretched vertically by L; values below machine-eps times the peak are zeroed
    and the kernel is normalised to sum 1. Kernels 1-12 use L = 2.5 + i/4, inner 0.1, s 0.25; the rest use
    L = 2 + i/4, inner 0.2, s 0.5. Every colour channel gets the same kernels."""
    r = (size - 1) // 2
    grid = np.arange(-r, r + 1, dtype=np.float64)
    x, y = np.meshgrid(grid, grid)                 # x varies along columns, y along rows
    out = np.zeros((num, size, size))
    for i in range(1, num + 1):
        long, inner, std = (2.5 + i / 4, 0.1, 0.25) if i <= 12 else (2 + i / 4, 0.2, 0.5)
        dead = np.floor(r * inner + 0.5)           # MATLAB round (half away from zero; values are >= 0)
        xi = np.sign(x) * (np.maximum(np.abs(x), dead) - dead)
        yi = np.sign(y) * (np.maximum(np.abs(y), dead) - dead) / long
        h = np.exp(-(xi ** 2 + yi ** 2) / (2 * std ** 2))
        h[h < np.finfo(np.float64).eps * h.max()] = 0
        out[i - 1] = h / h.sum() if h.sum() else h
    return torch.from_numpy(out).float().unsqueeze(0).repeat(channels, 1, 1, 1)


def load_rain_kernels(path: str | Path) -> torch.Tensor:
    """A kernel dictionary from a release ``init_kernel.mat`` (variable ``C9``) or a saved tensor (``.pt``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"rain-kernel file not found: {path}")
    if path.suffix == ".mat":
        from scipy.io import loadmat

        return torch.as_tensor(loadmat(str(path))["C9"], dtype=torch.float32).contiguous()
    return torch.as_tensor(torch.load(path, map_location="cpu"), dtype=torch.float32)


def _res_unit(ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU(),
                         nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch))


class ProxB(nn.Module):
    """Proximal net for [B, Z] (release: Xnet): four residual conv-BN-ReLU-conv-BN units, ReLU after each."""

    def __init__(self, ch: int):
        super().__init__()
        self.resx1, self.resx2, self.resx3, self.resx4 = (_res_unit(ch) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in (self.resx1, self.resx2, self.resx3, self.resx4):
            x = F.relu(x + unit(x))
        return x


class ProxM(nn.Module):
    """Proximal net for the rain maps (release: Mnet): like :class:`ProxB`, then relu(x - tau) (sparsity)."""

    def __init__(self, ch: int, tied: bool = True):
        super().__init__()
        self.tied, self.channels = tied, ch
        self.tau = nn.Parameter(torch.full((1, 1 if tied else ch, 1, 1), 0.5))
        self.resm1, self.resm2, self.resm3, self.resm4 = (_res_unit(ch) for _ in range(4))
        if tied:
            _tie(self, {"tau": ("tau", (1, ch, 1, 1))})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in (self.resm1, self.resm2, self.resm3, self.resm4):
            x = F.relu(x + unit(x))
        return F.relu(x - self.tau)


def _representative(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The first copy in ``t`` of a value of shape ``shape`` broadcast into it."""
    while t.dim() > len(shape):
        t = t[0]
    for d, n in enumerate(shape):
        if n == 1 and t.shape[d] != 1:
            t = t.narrow(d, 0, 1)
    return t


def _tie(module: nn.Module, copies: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """Make ``module``'s state dict hold, for every ``key: (param, shape)``, the parameter ``param`` broadcast to
    ``shape`` (as the release's expand() views are saved), and read such entries back on load, checking that
    all copies agree. ``key`` is either ``param`` itself (a compact parameter saved at full size) or an extra
    key that only aliases ``param``."""

    def save(mod, state, prefix, meta):
        for key, (name, shape) in copies.items():
            state[prefix + key] = getattr(mod, name).detach().expand(shape).clone()

    def load(mod, state, prefix, meta, strict, missing, unexpected, errors):
        for key, (name, shape) in copies.items():
            full, src = state.get(prefix + key), state.get(prefix + name)
            if full is None or src is None:
                continue  # strict loading reports the missing key
            rep = _representative(src, getattr(mod, name).shape)
            if tuple(full.shape) != tuple(shape) or not torch.allclose(full.float(), rep.float().expand(shape)):
                raise ValueError(f"{prefix + key}: expected {tuple(shape)} copies of one value (tied=True); this "
                                 "checkpoint's copies differ, build the network with tied=False to load it")
            if key == name:
                state[prefix + key] = rep.clone()
            else:
                del state[prefix + key]

    hook = getattr(module, "register_state_dict_post_hook", None) or module._register_state_dict_hook
    hook(save)
    module.register_load_state_dict_pre_hook(load)


class RCDNet(nn.Module):
    """RCD-Net; the defaults are the released configuration, :meth:`tiny` a small one of the same code path."""

    def __init__(self, stages: int = 17, num_m: int = 32, num_z: int = 32, rain_kernel: str | Path | None = None,
                 tied: bool = True, rgb_range: float = 255.0):
        super().__init__()
        if stages < 3:
            raise ValueError(f"RCD-Net needs stages >= 3 (the release reads conv[1]), got {stages}")
        kernel = rain_kernels(num_m) if rain_kernel is None else load_rain_kernels(rain_kernel)
        if kernel.shape != (3, num_m, 9, 9):
            raise ValueError(f"rain kernels must have shape (3, {num_m}, 9, 9), got {tuple(kernel.shape)}")
        self.stages, self.iters, self.tied, self.rgb_range = stages, stages - 1, tied, rgb_range
        it = self.iters
        self.eta1 = nn.Parameter(torch.ones(1))
        self.eta2 = nn.Parameter(torch.full((1,), 5.0))
        self.weight0 = nn.Parameter(kernel.clone())
        self.w_z_f = nn.Parameter(torch.full((1, 1, 3, 3) if tied else (num_z, 3, 3, 3), 1 / 9))
        self.tau = nn.Parameter(torch.ones(1))
        if tied:
            _tie(self, {"eta11": ("eta1", (it, 1)), "eta12": ("eta2", (it, 1)),
                        "conv": ("weight0", (it, 3, num_m, 9, 9)), "w_z_f": ("w_z_f", (num_z, 3, 3, 3))})
        else:
            self.eta11 = nn.Parameter(torch.ones(it, 1))
            self.eta12 = nn.Parameter(torch.full((it, 1), 5.0))
            self.conv = nn.Parameter(kernel.unsqueeze(0).repeat(it, 1, 1, 1, 1))
        self.num_z = num_z
        self.xnet = ProxB(num_z + 3)
        self.mnet = ProxM(num_m, tied)
        self.x_stage = nn.Sequential(*(ProxB(num_z + 3) for _ in range(stages)))
        self.m_stage = nn.Sequential(*(ProxM(num_m, tied) for _ in range(stages)))
        self.fxnet = ProxB(num_z + 3)

    @classmethod
    def tiny(cls, **kw) -> RCDNet:
        """A small configuration of the same code path for CPU smoke runs."""
        return cls(**{**TINY, **kw})

    def _kernel(self, stage: int) -> torch.Tensor:
        """The dictionary used by stage ``stage`` (0: the initial M step), divided by 10 as released."""
        if self.tied or stage == 0:
            return self.weight0 / 10
        return self.conv[1] / 10

    def _steps(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tied:
            return self.eta1 / 10, self.eta2 / 10
        return self.eta11[i] / 10, self.eta12[i] / 10

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(B0, [B after each stage and after the final refinement], [rain layer C (x) M of each stage]), all
        divided by ``rgb_range``: the outputs the release's loss supervises."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"RCD-Net needs (B, 3, H, W) images, got {tuple(x.shape)}")
        o = x * self.rgb_range
        w_z = self.w_z_f.expand(self.num_z, 3, 3, 3)
        out = self.xnet(torch.cat([o, F.conv2d(o, w_z, padding=1)], 1))
        b0, z = out[:, :3], out[:, 3:]
        m = self.m_stage[0](F.conv_transpose2d(F.relu(o - b0 - self.tau), self._kernel(0), padding=4))
        k = self._kernel(1)
        cm = F.conv2d(m, k, padding=4)
        b = b0 - self.eta2 / 10 * (b0 - (o - cm))
        out = self.x_stage[0](torch.cat([b, z], 1))
        b, z = out[:, :3], out[:, 3:]
        bs, cms = [b], [cm]
        for i in range(self.iters):
            eta_m, eta_b = self._steps(i)
            grad_m = F.conv_transpose2d(cm - (o - b), k, padding=4)
            m = self.m_stage[i + 1](m - eta_m * grad_m)
            cm = F.conv2d(m, k, padding=4)
            b = b - eta_b * (b - (o - cm))
            out = self.x_stage[i + 1](torch.cat([b, z], 1))
            b, z = out[:, :3], out[:, 3:]
            bs.append(b)
            cms.append(cm)
        bs.append(self.fxnet(out)[:, :3])
        s = self.rgb_range
        return b0 / s, [t / s for t in bs], [t / s for t in cms]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[1][-1]
