"""LPIPS (the ``lpips`` package) without silent failure modes.

``lpips`` 0.1.4 ships only its linear layers and downloads the ImageNet AlexNet backbone from a hub
at first use. Offline, :func:`load_lpips` loads a *complete* state dict (backbone + linear layers)
from a file, strictly (every key must match), so a random backbone can never be used silently. The
file is looked up in order: the ``path`` argument, ``$HVQ_LPIPS_WEIGHTS``,
``<data dir>/lpips/lpips_alex_v0.1_full.pth``. If none exists, the package's own download is tried
(online users); if that fails too, a clear error says where to put the file.

Inputs are images in [0, 1] (``normalize=True`` is applied here; LPIPS itself expects [-1, 1]).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

LPIPS_FILE = "lpips_alex_v0.1_full.pth"


def lpips_weights_path(path: str | Path | None = None) -> Path | None:
    """The first existing candidate for the complete LPIPS-alex state dict, or None."""
    from hvq.data import default_data_dir

    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"LPIPS weights not found at {path}")
        return Path(path)
    for c in (os.environ.get("HVQ_LPIPS_WEIGHTS"), default_data_dir() / "lpips" / LPIPS_FILE):
        if c and Path(c).is_file():
            return Path(c)
    return None


class LPIPS(nn.Module):
    """Frozen LPIPS-alex distance for images in [0, 1]: ``(B, 3, H, W) x 2 -> (B,)``."""

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        import lpips

        weights = lpips_weights_path(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if weights is not None:
                net = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
                state = torch.load(weights, map_location="cpu", weights_only=True)
                net.load_state_dict(state, strict=True)
            else:
                try:
                    net = lpips.LPIPS(net="alex", verbose=False)  # downloads the backbone (online)
                except Exception as exc:
                    raise RuntimeError(
                        "LPIPS needs the ImageNet AlexNet backbone and none was found offline. Put the "
                        f"complete state dict '{LPIPS_FILE}' in <data dir>/lpips/ or set HVQ_LPIPS_WEIGHTS "
                        "(see ../shared/README.md), or run once with internet access."
                    ) from exc
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.weights_path = weights

    def train(self, mode: bool = True) -> LPIPS:  # always frozen
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(x, y, normalize=True).flatten()
