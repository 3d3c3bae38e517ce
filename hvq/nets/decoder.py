"""Synthesis transform g_s: quantised embeddings of three granularities -> image.

Probability-adaptive decoding (our reading of the paper's "probability-adaptive decoder", whose
method text is not public): besides the code vectors and the granularity masks, the decoder receives
at every position how confident the entropy model was about the code that was sent: the bits of the
chosen index ``-log2 p(k*)`` (normalised by ``log2 K``) and the mean ``log sigma`` of the predicted
Gaussian. Both are known to the decoder (it rebuilds the same hyperprior from z), so no extra bits
are sent; they let the decoder spend its generative capacity where the code was surprising. Set
``adaptive_decoder: false`` in the config for the plain-decoder ablation.

Shapes: ``forward(embeds [(B, D, H/4, W/4), (B, D, H/8, W/8), (B, D, H/16, W/16)], masks (same grids,
1 channel), confidence (same grids, 2 channels) or None, cond) -> x_hat (B, 3, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hvq.config import ModelConfig
from hvq.nets.blocks import ResBlock, Upsample, group_norm, run_blocks

CONFIDENCE_CHANNELS = 2


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, gw, cd = cfg.embed_dim, cfg.granularity_width, cfg.cond_dim
        w, nb = cfg.decoder_widths, cfg.decoder_res_blocks
        self.adaptive = cfg.adaptive_decoder
        c_in = d + (CONFIDENCE_CHANNELS if self.adaptive else 0)
        # One branch per granularity at its own resolution (fine, medium, coarse).
        self.branch_in = nn.ModuleList([nn.Conv2d(c_in, gw, 3, padding=1) for _ in range(3)])
        self.branch_res = nn.ModuleList([ResBlock(gw, gw, cd) for _ in range(3)])
        self.merge = nn.Conv2d(gw + 3, w[2], 3, padding=1)
        self.level4 = nn.ModuleList([ResBlock(w[2], w[2], cd) for _ in range(nb[2])])
        self.up4 = Upsample(w[2], w[1])
        self.level2 = nn.ModuleList([ResBlock(w[1], w[1], cd) for _ in range(nb[1])])
        self.up2 = Upsample(w[1], w[0])
        self.level1 = nn.ModuleList([ResBlock(w[0], w[0], cd) for _ in range(nb[0])])
        self.norm_out = group_norm(w[0])
        self.conv_out = nn.Conv2d(w[0], 3, 3, padding=1)

    def forward(
        self,
        embeds: list[Tensor],
        masks: list[Tensor],
        confidence: list[Tensor] | None,
        cond: Tensor | None = None,
    ) -> Tensor:
        fine_hw = embeds[0].shape[-2:]
        feats, mask_channels = 0.0, []
        for g in range(3):
            inp = embeds[g]
            if self.adaptive:
                inp = torch.cat([inp, confidence[g].to(inp.dtype)], dim=1)
            f = self.branch_res[g](self.branch_in[g](inp), cond)
            factor = 2**g
            f_up = F.interpolate(f, scale_factor=float(factor), mode="nearest") if factor > 1 else f
            m_up = F.interpolate(masks[g], size=fine_hw, mode="nearest") if factor > 1 else masks[g]
            feats = feats + f_up * m_up.to(f_up.dtype)
            mask_channels.append(m_up.to(f_up.dtype))
        h = self.merge(torch.cat([feats] + mask_channels, dim=1))
        h = run_blocks(self.level4, h, cond)
        h = run_blocks(self.level2, self.up4(h), cond)
        h = run_blocks(self.level1, self.up2(h), cond)
        return 0.5 * (self.conv_out(F.silu(self.norm_out(h))) + 1.0)

    @property
    def last_layer(self) -> Tensor:
        """Weight used by the VQGAN adaptive adversarial weight."""
        return self.conv_out.weight
