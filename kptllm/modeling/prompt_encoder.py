"""Prompt encoder (paper Sec. 3.2, Eq. 1): F_p = MLP(PE(x))."""

from __future__ import annotations

import torch
from torch import nn

from .position import sine_cosine_encoding


class PromptEncoder(nn.Module):
    """Maps keypoint prompts to the visual feature space.

    Input `points [P, 2]`: (x, y) normalised to the support crop, in [0, 1].
    Output `[P, vision_dim]`.
    """

    def __init__(self, pe_dim: int, vision_dim: int):
        super().__init__()
        self.pe_dim = pe_dim
        self.mlp = nn.Sequential(nn.Linear(pe_dim, vision_dim), nn.GELU(), nn.Linear(vision_dim, vision_dim))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        dtype = self.mlp[0].weight.dtype
        return self.mlp(sine_cosine_encoding(points.float(), self.pe_dim).to(dtype))
