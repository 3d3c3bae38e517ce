"""Analysis transform g_a: image -> features at three granularities (1/4, 1/8, 1/16 of the side)."""

from __future__ import annotations

from torch import Tensor, nn

from hvq.config import ModelConfig
from hvq.nets.blocks import Downsample, ResBlock, group_norm, run_blocks


class Encoder(nn.Module):
    """VQGAN-style encoder with three embedding heads.

    ``x: (B, 3, H, W)`` in [0, 1], ``cond: (B, cond_dim)`` or None ->
    ``[y_fine (B, D, H/4, W/4), y_medium (B, D, H/8, W/8), y_coarse (B, D, H/16, W/16)]``
    (H and W multiples of 16). Level ``i`` runs at ``1/2**i`` with ``widths[i]`` channels; the full
    resolution level is a single stem convolution by default, so few channels touch every pixel.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w, nb, cd = cfg.widths, cfg.res_blocks, cfg.cond_dim
        self.stem = nn.Conv2d(3, w[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i in range(5):
            self.levels.append(nn.ModuleList([ResBlock(w[i], w[i], cd) for _ in range(nb[i])]))
            if i < 4:
                self.downs.append(Downsample(w[i], w[i + 1]))
        self.heads = nn.ModuleList(
            [nn.Sequential(group_norm(w[i]), nn.SiLU(), nn.Conv2d(w[i], cfg.embed_dim, 1)) for i in (2, 3, 4)]
        )

    def forward(self, x: Tensor, cond: Tensor | None = None) -> list[Tensor]:
        h = self.stem(2.0 * x - 1.0)
        taps = []
        for i in range(5):
            h = run_blocks(self.levels[i], h, cond)
            if i >= 2:
                taps.append(h)
            if i < 4:
                h = self.downs[i](h)
        return [head(t) for head, t in zip(self.heads, taps, strict=True)]
