"""PatchGAN discriminator (pix2pix / VQGAN), hinge loss, VQGAN's adaptive weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hvq.nets.blocks import group_norm


class PatchDiscriminator(nn.Module):
    """``x (B, 3, H, W)`` in [0, 1] -> patch logits ``(B, 1, H/8 - 2, W/8 - 2)`` (3 strided layers)."""

    def __init__(self, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for i in range(1, layers + 1):
            c_next = width * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(c, c_next, 4, stride, 1), group_norm(c_next), nn.LeakyReLU(0.2)]
            c = c_next
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(2.0 * x - 1.0)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """VQGAN: ``||grad rec|| / (||grad gan|| + 1e-4)`` at the decoder's last layer, clamped."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()
