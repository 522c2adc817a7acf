"""Prompt feature extractor (paper Sec. 3.3, Eq. 2): z_p = CrossAttnLayers(F_p, F_s).

The prompt feature is the query; the support image's patch tokens, with the positional encoding of
their grid centres added to the keys, are keys and values. Each prompt token attends independently,
so many prompts on one support image are processed as one sequence of queries.

Our addition beside Eq. 2 (`local_read`, on by default): before the cross-attention, the query also
gets `W · F_s(point)`, the support feature map sampled bilinearly under the prompt point (grid cell i
has its centre at (i + 0.5) / n of the crop, the frame of `grid_centres`). It is the average-pooling
baseline of the paper's Tab. 14 kept together with the cross-attention: the attention still gathers
context, but the token no longer has to learn to find its own point. W starts at zero, so a checkpoint
trained without it gives the same outputs until training moves W.

A second, optional read (`pixel_read`, a window side in crop pixels; 0 = off): the support crop's own pixels
in a `pixel_read x pixel_read` window centred on the point (pixel i's centre at (i + 0.5) / S, one pixel
apart), flattened through another zero-initialised linear layer into the query. The patch grid is coarse
(a 96 px crop has 12 x 12 patches of 8 px): a drawn person's nose, eyes and ears lie within one or two
patches, while their colours a few pixels apart tell them apart.
"""

from __future__ import annotations

import torch
from torch import nn

from .position import grid_centres, sine_cosine_encoding


def sample_at_points(tokens: torch.Tensor, grid: tuple[int, int], points: torch.Tensor,
                     map_ids: torch.Tensor) -> torch.Tensor:
    """Bilinear read of row-major token grids at points.

    `tokens [M, h*w, D]`: M feature maps of `grid = (h, w)` tokens in `grid_centres` order; `points [P, 2]`:
    (x, y) in the normalised crop frame [0, 1]; `map_ids [P]`: which map each point reads. Token (r, c)
    has its centre at ((c + 0.5) / w, (r + 0.5) / h); beyond the outer centres the border tokens are
    read. Returns `[P, D]`.
    """
    h, w = grid
    maps = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)[map_ids]  # [P, D, h, w]
    # grid_sample with align_corners=False puts pixel i's centre at (i + 0.5) / n of [0, 1] (mapped to [-1, 1])
    where = (points.to(maps.dtype) * 2 - 1).reshape(-1, 1, 1, 2)
    read = torch.nn.functional.grid_sample(maps, where, mode="bilinear", padding_mode="border", align_corners=False)
    return read.reshape(len(points), -1)


def sample_windows(pixels: torch.Tensor, points: torch.Tensor, image_ids: torch.Tensor, side: int) -> torch.Tensor:
    """`side x side` pixel windows centred on points, one pixel apart (bilinear; zero outside the crop).

    `pixels [M, C, S, S]`: M crops; `points [P, 2]`: (x, y) in the normalised crop frame [0, 1], pixel i
    having its centre at (i + 0.5) / S; `image_ids [P]`: which crop each point is on. Returns `[P, C*side*side]`
    (channel-major, then rows top to bottom, then columns left to right)."""
    size = pixels.shape[-1]
    offsets = (torch.arange(side, device=pixels.device, dtype=pixels.dtype) - (side - 1) / 2) / size
    points = points.to(pixels.dtype)
    xs = points[:, 0, None, None] + offsets[None, None, :]  # [P, 1, side]
    ys = points[:, 1, None, None] + offsets[None, :, None]  # [P, side, 1]
    where = torch.stack(torch.broadcast_tensors(xs, ys), dim=-1) * 2 - 1  # [P, side, side, 2]
    read = torch.nn.functional.grid_sample(pixels[image_ids], where, mode="bilinear", padding_mode="zeros",
                                           align_corners=False)
    return read.reshape(len(points), -1)


class CrossAttentionLayer(nn.Module):
    """Pre-norm cross-attention + MLP block. `queries [B, Q, D]`, `memory [B, N, D]`, `memory_pos [B|1, N, D]`."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_memory = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                return_attention: bool = False):
        """-> queries `[B, Q, D]`, and with `return_attention` also the weights `[B, heads, Q, N]`."""
        memory = self.norm_memory(memory)
        attended, weights = self.attn(self.norm_query(queries), memory + memory_pos, memory,
                                      need_weights=return_attention, average_attn_weights=False)
        queries = queries + attended
        queries = queries + self.mlp(self.norm_mlp(queries))
        return (queries, weights) if return_attention else queries


class PromptFeatureExtractor(nn.Module):
    """Keypoint-specific features from support features.

    forward(prompt_features [P, Dv], support_features [M, N, Dv], support_ids [P], points [P, 2],
            support_pixels [M, 3, S, S]) -> [P, D_llm]
    where `support_ids[i]` says on which support image prompt i was given and `points` (x, y in the
    normalised support crop) where; `points` are read only with `local_read` or `pixel_read`, and
    `support_pixels` (the normalised support crops) only with `pixel_read` (module docstring).
    """

    def __init__(self, vision_dim: int, llm_dim: int, pe_dim: int, grid: tuple[int, int], num_layers: int, num_heads: int,
                 local_read: bool = False, pixel_read: int = 0, channels: int = 3):
        super().__init__()
        self.pe_dim = pe_dim
        self.grid = tuple(grid)
        self.local_proj = nn.Linear(vision_dim, vision_dim) if local_read else None
        self.pixel_read = int(pixel_read)
        self.pixel_proj = nn.Linear(channels * self.pixel_read ** 2, vision_dim) if self.pixel_read else None
        for layer in (self.local_proj, self.pixel_proj):
            if layer is not None:  # zero-initialised (KptLLMForKeypoints._init_weights keeps it so for
                # checkpoints that lack it: they load with identical outputs)
                layer.kptllm_zero_init = True
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.position_proj = nn.Linear(pe_dim, vision_dim)
        self.layers = nn.ModuleList(CrossAttentionLayer(vision_dim, num_heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(vision_dim)
        self.out_proj = nn.Linear(vision_dim, llm_dim)

    def _memory_pos(self, support_features: torch.Tensor) -> torch.Tensor:
        num_tokens = support_features.shape[1]
        if num_tokens != self.grid[0] * self.grid[1]:
            raise ValueError(f"support features have {num_tokens} tokens, expected a {self.grid} grid")
        centres = grid_centres(*self.grid, device=support_features.device)
        return self.position_proj(sine_cosine_encoding(centres, self.pe_dim).to(support_features.dtype))[None]

    def _queries(self, prompt_features: torch.Tensor, support_features: torch.Tensor, support_ids: torch.Tensor,
                 points: torch.Tensor | None, support_pixels: torch.Tensor | None = None) -> torch.Tensor:
        """The cross-attention queries `[P, Dv]`: F_p, plus the local reads under the point when enabled."""
        queries = prompt_features.to(support_features.dtype)
        if self.local_proj is None and self.pixel_proj is None:
            return queries
        if points is None:
            raise ValueError("this prompt feature extractor reads the support under each point: pass points")
        if self.local_proj is not None:
            queries = queries + self.local_proj(sample_at_points(support_features, self.grid, points, support_ids))
        if self.pixel_proj is not None:
            if support_pixels is None:
                raise ValueError("this prompt feature extractor reads the support's pixels: pass support_pixels")
            window = sample_windows(support_pixels.to(queries.dtype), points, support_ids, self.pixel_read)
            queries = queries + self.pixel_proj(window)
        return queries

    def attention(self, prompt_features: torch.Tensor, support_features: torch.Tensor,
                  points: torch.Tensor | None = None, support_pixels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Where each layer looks (a diagnostic): prompts `[P, Dv]` at `points [P, 2]` on ONE support image
        `[1, N, Dv]` -> per layer the weights `[heads, P, N]` over the row-major grid (`grid_centres` order)."""
        memory_pos = self._memory_pos(support_features)
        ids = torch.zeros(len(prompt_features), dtype=torch.long, device=support_features.device)
        queries, maps = self._queries(prompt_features, support_features, ids, points, support_pixels)[None], []
        for layer in self.layers:
            queries, weights = layer(queries, support_features, memory_pos, return_attention=True)
            maps.append(weights[0])
        return maps

    def forward(self, prompt_features: torch.Tensor, support_features: torch.Tensor, support_ids: torch.Tensor,
                points: torch.Tensor | None = None, support_pixels: torch.Tensor | None = None) -> torch.Tensor:
        memory_pos = self._memory_pos(support_features)
        prompt_features = self._queries(prompt_features, support_features, support_ids, points, support_pixels)
        # Group the prompts by support image into one padded batch [M, Q_max, Dv]: one call for all
        # supports (the padding rows attend like any other query and are dropped; queries never mix).
        order = torch.argsort(support_ids, stable=True)
        sorted_ids = support_ids[order]
        counts = torch.bincount(support_ids, minlength=support_features.shape[0])
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(order), device=order.device) - starts[sorted_ids]
        queries = prompt_features.new_zeros(support_features.shape[0], int(counts.max()), prompt_features.shape[-1])
        queries[sorted_ids, slot] = prompt_features[order].to(queries.dtype)
        for layer in self.layers:
            queries = layer(queries, support_features, memory_pos)
        features = self.out_proj(self.norm(queries[sorted_ids, slot]))
        return features[torch.argsort(order)]
