"""Restoration networks, one family per module (release parameter names where a release exists)."""
from __future__ import annotations

import torch.nn as nn


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those requiring grad with ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
