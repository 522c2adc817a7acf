"""Sine-cosine positional encoding of 2-D points (paper Eq. 1, the `PE` of the prompt encoder).

Points live in the model's input-crop frame, normalised to [0, 1]. The same encoding is used for the
prompt point and for the centres of the support feature grid, so both share one coordinate frame.
"""

from __future__ import annotations

import math

import torch

# Frequencies are spaced geometrically from 1 to this many cycles per crop side: the finest one
# resolves ~1/64 of the crop (3.5 px at 224), well below the 14 px patch size.
MAX_CYCLES_PER_SIDE = 64.0


def sine_cosine_encoding(points: torch.Tensor, dim: int) -> torch.Tensor:
    """Encode points `[..., 2]` (x, y in [0, 1]) into `[..., dim]` features (sin and cos per frequency).

    `dim` must be a multiple of 4: dim/4 frequencies per axis, each giving a sine and a cosine.
    """
    if dim % 4:
        raise ValueError("dim must be a multiple of 4")
    num_freqs = dim // 4
    exponents = torch.arange(num_freqs, device=points.device, dtype=torch.float32) / max(num_freqs - 1, 1)
    freqs = 2 * math.pi * MAX_CYCLES_PER_SIDE**exponents  # [F]
    angles = points.float()[..., None] * freqs  # [..., 2, F]
    encoded = torch.cat([angles.sin(), angles.cos()], dim=-1)  # [..., 2, 2F]
    return encoded.flatten(-2).to(points.dtype if points.is_floating_point() else torch.float32)


def grid_centres(height: int, width: int, device=None) -> torch.Tensor:
    """Centres of an `height x width` feature grid in the normalised crop frame, `[height*width, 2]` (x, y), row-major."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)
