"""One shared codebook for all granularities: nearest-neighbour search, straight-through, usage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class VectorQuantizer(nn.Module):
    """Vector quantiser with a single ``(K, D)`` codebook shared by the three granularities.

    Choice (documented, as asked): the codebook is a plain parameter trained by the VQ-VAE codebook
    loss ``||sg(y) - e||^2`` with commitment ``beta ||y - sg(e)||^2`` (not EMA updates), so that the
    rate gradient *can* reach it (``rate_grad_to_codebook``, an ablation). The straight-through output
    ``y + sg(e - y)`` sends the decoder's gradient to the encoder only. Dead codes (unused since the
    last restart) are re-initialised to randomly chosen encoder outputs while training
    (``restart_dead_codes_``), as in lucidrains' ``expire_codes_``; usage is tracked as perplexity
    and a dead-code count.

    Shapes: ``quantize(y: (B, D, h, w)) -> (y_hat (B, D, h, w) straight-through, idx (B, h, w))``.
    """

    def __init__(self, num_codes: int, dim: int, chunk: int = 4096) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(num_codes, dim) * 0.5)
        self.chunk = chunk
        self.register_buffer("usage", torch.zeros(num_codes))  # hits since the last restart
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def num_codes(self) -> int:
        return self.codebook.shape[0]

    @torch.no_grad()
    def nearest(self, y: Tensor) -> Tensor:
        """Index of the nearest code for every vector: ``(B, D, h, w) -> (B, h, w)`` int64.

        ``argmin_k |e_k|^2 - 2 y.e_k`` (the squared distance less ``|y|^2``, which every code shares):
        one matrix product per block of vectors and codes, in blocks of about 4 MB (few enough that
        threads rarely wait on each other), with ``chunk`` codes per block, so memory is bounded
        whatever the image. Between codes closer than float32 rounding the pick may differ from a
        direct ``|y - e|^2``; the choice need not be reproducible (the file carries the index),
        only a nearest code.
        """
        b, d, h, w = y.shape
        flat = y.permute(0, 2, 3, 1).reshape(-1, d).float()
        cb = self.codebook.float()
        best = torch.empty(flat.shape[0], dtype=torch.long, device=y.device)
        rows = max(1, (1 << 20) // min(self.chunk, cb.shape[0]))
        for start in range(0, flat.shape[0], rows):
            best[start : start + rows] = self._nearest_block(flat[start : start + rows], cb)
        return best.view(b, h, w)

    def _nearest_block(self, flat: Tensor, cb: Tensor) -> Tensor:
        """:meth:`nearest` of ``flat (n, D)`` among ``cb (K, D)``: ``(n,)`` int64, ``chunk`` codes at a
        time."""
        best_d, best_i = None, None
        for start in range(0, cb.shape[0], self.chunk):
            part = cb[start : start + self.chunk]
            dist = torch.addmm(part.pow(2).sum(1), flat, part.T, alpha=-2)  # |e|^2 - 2 y.e, (n, chunk)
            val, arg = dist.min(dim=1)
            if best_d is None:
                best_d, best_i = val, arg
                continue
            better = val < best_d
            best_d = torch.where(better, val, best_d)
            best_i = torch.where(better, arg + start, best_i)
        return best_i

    def embed(self, idx: Tensor) -> Tensor:
        """Codebook vectors for indices: ``(B, h, w) -> (B, D, h, w)``."""
        return F.embedding(idx, self.codebook).permute(0, 3, 1, 2)

    def forward(self, y: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Quantise ``y (B, D, h, w)``; ``mask (B, 1, h, w)`` selects positions that count.

        Returns ``(y_hat, idx, (codebook_loss, commit_loss))``. ``y_hat = y + sg(e_idx - y)``: its value
        is exactly the code vector; its gradient goes straight through to the encoder.
        """
        y = y.float()
        if self.training and not bool(self.initialised):
            self._init_from(y)
        idx = self.nearest(y)
        e = self.embed(idx)
        m = torch.ones_like(y[:, :1]) if mask is None else mask
        denom = m.sum().clamp_min(1.0) * y.shape[1]
        codebook_loss = ((y.detach() - e).pow(2) * m).sum() / denom
        commit_loss = ((y - e.detach()).pow(2) * m).sum() / denom
        if self.training:
            with torch.no_grad():
                sel = idx[m[:, 0] > 0]
                self.usage += torch.bincount(sel.flatten(), minlength=self.num_codes).float()
        y_hat = y + (e - y).detach()
        return y_hat, idx, (codebook_loss, commit_loss)

    @torch.no_grad()
    def _init_from(self, y: Tensor) -> None:
        flat = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
        pick = torch.randint(0, flat.shape[0], (self.num_codes,), device=y.device)
        self.codebook.data.copy_(flat[pick] + 0.01 * torch.randn_like(flat[pick]))
        self.initialised.fill_(True)

    @torch.no_grad()
    def restart_dead_codes_(self, y: Tensor) -> int:
        """Re-initialise codes unused since the last call to random vectors of ``y (N, D)``;
        returns how many were restarted and resets the usage counters."""
        dead = self.usage == 0
        n = int(dead.sum())
        if n and y.shape[0]:
            pick = torch.randint(0, y.shape[0], (n,), device=y.device)
            self.codebook.data[dead] = y[pick].float() + 0.01 * torch.randn(n, y.shape[1], device=y.device)
        self.usage.zero_()
        return n

    @torch.no_grad()
    def perplexity(self, idx: Tensor) -> float:
        """``2**H`` of the empirical code distribution in ``idx`` (K = all codes used equally)."""
        counts = torch.bincount(idx.flatten(), minlength=self.num_codes).float()
        p = counts / counts.sum().clamp_min(1)
        return float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
