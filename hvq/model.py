"""HVQ-CGIC: a three-granularity VQ codec whose indices are coded with per-granularity hyperpriors.

Reference: "Enabling Hyperprior Entropy Modeling for VQ-Based Controllable Generative Image
Compression" (HVQ-CGIC; v2 "HyperVQ"), arXiv 2512.07192. Only the abstract is public; where this
module fills a gap with our own reading it says so (and ``tests/`` checks the reading).

Data flow (one granularity g of three; ``m_g`` the router's mask)::

    x ──g_a──► y_g ──VQ──► k_g (indices) ───────────────► [range coder, p(k | mu, sigma)] ──► bits
                │                                                    ▲
                └─h_a(y_g m_g, m_g)─► z_g ─Q─► z_hat_g ─► [factorised prior] ─► bits
                                                 │
                                                 └─h_s(z_hat_g, m_g, lambda)─► mu_g, sigma_g
    x ──router(entropy ranking, ratios, ROI)──► m_coarse, m_medium, m_fine ─► [Bernoulli] ─► bits
    (e_{k_g} m_g, m_g, confidence_g) for g in 3 ──g_s(lambda)──► x_hat

* ``forward`` (training): noisy z, straight-through VQ, differentiable rate in bits per pixel.
* ``compress`` / ``decompress`` (real bits): rounded z, integer tables (``hvq.tables``), constriction
  range coding (``hvq.coder``), the ``.hvq`` container (``hvq.container``). ``compress`` decodes z
  itself and computes the entropy parameters in float64 on the CPU, exactly as the decoder will.
* ``update()`` fills the integer tables of z and of the static histogram (CompressAI style); it is
  called when a checkpoint is saved, and ``compress`` refuses to run without it.

The rate knob: lambda (the weight of distortion against rate) is an *input* of the encoder, the
hyper-synthesis and the decoder (FiLM), sampled per batch in training, so one model covers a
continuous range of rates; the granularity ratios are a second knob. The container stores the knob
values ``(lambda, coarse_ratio, medium_ratio)`` and a per-channel colour offset (integers, in
``1/COLOUR_STEPS`` of a level, fitted by the encoder on the decoder's own output, see
:meth:`HVQCodec.fit_colour_offset`), so the decoder needs nothing else.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hvq import coder, tables
from hvq.config import ModelConfig
from hvq.container import Container, symbols_crc32
from hvq.errors import BitstreamError
from hvq.nets import Decoder, Encoder, Hyperprior, VectorQuantizer, route
from hvq.nets.blocks import RateEmbedding
from hvq.probability import SCALE_MAX, SCALE_MIN, StaticHistogram, embedding_bits, index_bits

GRANULARITIES = ("fine", "medium", "coarse")
#: The seven streams of a file, in order.
STREAM_NAMES = ("mask", "z fine", "z medium", "z coarse", "index fine", "index medium", "index coarse")
STRIDES = (4, 8, 16)
#: Images are padded (edge replication) to a multiple of this before coding, then cropped back.
PAD_MULTIPLE = 16
#: Largest image the codec accepts (pixels), checked before any network runs.
MAX_CODEC_PIXELS = 1 << 24
#: Container bytes besides the payloads: header, 6 knobs (lambda, 2 ratios, 3 colour offsets),
#: 7 stream lengths, mask split, 2 CRCs, and about one 32-bit flush word per range-coded stream.
CONTAINER_OVERHEAD_BYTES = 18 + 24 + 1 + 28 + 4 + 8 + 8 * 4
#: Probability floor of the two mask symbols (keeps a ratio of 0 or 1 codable).
MASK_P_FLOOR = 1.0 / 256
#: The colour offset is sent in steps of 1/COLOUR_STEPS of one 8-bit level (at most the full range).
COLOUR_STEPS = 4
COLOUR_MAX = 255 * COLOUR_STEPS
_COLOUR_STEP = 1.0 / (255 * COLOUR_STEPS)  # one step of the offset, in [0, 1] pixel units


@dataclass
class Features:
    """Ratio-independent analysis of one image (see :meth:`HVQCodec.encode_features`)."""

    height: int
    width: int
    lam: float
    t: Tensor
    x_padded: Tensor  # (1, 3, Hp, Wp)
    roi_padded: Tensor | None  # (1, 1, Hp, Wp)
    ys: list[Tensor]  # features per granularity (1, D, h_g, w_g)
    indices: list[Tensor]  # nearest codes per granularity (1, h_g, w_g)


@dataclass
class Symbols:
    """Everything the bitstream carries, decoded: knobs, masks, z and indices (batch of one).

    ``masks[g]``: ``(1, 1, h_g, w_g)`` 0/1; ``z_hat[g]``: ``(1, Cz, ., .)`` integers;
    ``indices[g]``: ``(1, h_g, w_g)`` int64 (meaningful where the mask is 1);
    ``freqs[g]``: ``(n_g, K)`` integer tables of the coded positions.
    """

    height: int
    width: int
    lam: float
    coarse_ratio: float
    medium_ratio: float
    masks: list[Tensor]
    z_hat: list[Tensor]
    indices: list[Tensor]
    freqs: list[np.ndarray]
    log_scale: list[Tensor]
    colour_offset: tuple[int, int, int] = (0, 0, 0)  # per channel, in 1/COLOUR_STEPS of a level


def _mask_table(p: float) -> np.ndarray:
    p = min(max(float(p), MASK_P_FLOOR), 1.0 - MASK_P_FLOOR)
    w = np.array([[round((1.0 - p) * 2**16), round(p * 2**16)]], dtype=np.int64)
    return tables.freqs_from_weights(w)[0]


def _binary_entropy_bits(p: Tensor, n: Tensor, k: Tensor) -> Tensor:
    p = p.clamp(MASK_P_FLOOR, 1 - MASK_P_FLOOR)
    return -(k * torch.log2(p) + (n - k) * torch.log2(1 - p))


class HVQCodec(nn.Module):
    """The codec. ``HVQCodec(ModelConfig())``; see the module docstring for the data flow.

    Example:
        >>> import torch
        >>> from hvq.config import ModelConfig
        >>> from hvq.model import HVQCodec
        >>> cfg = ModelConfig(widths=(8, 8, 16, 16, 16), granularity_width=16, decoder_widths=(8, 8, 16),
        ...                   hyper_channels=16, codebook_size=64)
        >>> model = HVQCodec(cfg).eval(); model.update()
        >>> x = torch.rand(3, 40, 56)
        >>> data = model.compress(x, lam=8.0, coarse_ratio=0.5, medium_ratio=0.5)
        >>> model.decompress(data).shape
        torch.Size([3, 40, 56])
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.embed_dim)
        n_hp = 1 if cfg.shared_hyperprior else 3
        iso = cfg.covariance == "isotropic"
        self.hyperpriors = nn.ModuleList(
            [
                Hyperprior(cfg.embed_dim, cfg.hyper_channels, cfg.z_channels, cfg.cond_dim, iso)
                for _ in range(n_hp)
            ]
        )
        if cfg.cond_dim:
            self.embed_enc = RateEmbedding(cfg.cond_dim)
            self.embed_dec = RateEmbedding(cfg.cond_dim)
            self.embed_hyper = RateEmbedding(cfg.cond_dim)
        self.static = StaticHistogram(cfg.codebook_size)
        n_sym = 2 * cfg.z_support + 1
        self.register_buffer("z_freqs", torch.zeros(n_hp, cfg.z_channels, n_sym, dtype=torch.int64))
        self.register_buffer("static_freqs", torch.zeros(cfg.codebook_size, dtype=torch.int64))
        self._exact_cache: tuple | None = None
        self._tag_cache: bytes | None = None

    # ------------------------------------------------------------------ knobs
    def lambda_to_t(self, lam: Tensor | float) -> Tensor:
        """Normalised log-lambda in [0, 1] (the rate input); errors outside the trained range."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lo, hi = self.cfg.lambda_min, self.cfg.lambda_max
        if ((lam < lo * (1 - 1e-6)) | (lam > hi * (1 + 1e-6))).any():
            raise ValueError(f"lambda must lie in the trained range [{lo}, {hi}]")
        if hi == lo:
            return torch.zeros_like(lam)
        return ((lam.log() - math.log(lo)) / (math.log(hi) - math.log(lo))).clamp(0, 1)

    def _conds(self, t: Tensor, dtype=torch.float32, device=None):
        if not self.cfg.cond_dim:
            return None, None, None
        t = t.to(device=device or self.quantizer.codebook.device, dtype=dtype)
        return self.embed_enc(t), self.embed_dec(t), self.embed_hyper(t)

    def hyperprior(self, g: int) -> Hyperprior:
        return self.hyperpriors[0 if self.cfg.shared_hyperprior else g]

    # --------------------------------------------------------------- training
    def forward(
        self,
        x: Tensor,
        lam: Tensor | float,
        coarse_ratio: Tensor | float,
        medium_ratio: Tensor | float,
        roi: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Training / estimation pass. ``x: (B, 3, H, W)`` in [0, 1], H and W multiples of 16.

        ``lam``, ``coarse_ratio``, ``medium_ratio``: floats or ``(B,)`` tensors.

        Returns a dict with ``x_hat (B, 3, H, W)``, ``bpp`` ``(B,)`` (index + z + mask),
        ``bpp_index``, ``bpp_z``, ``bpp_mask`` ``(B,)``, ``codebook_loss``, ``commit_loss``, and per
        granularity ``indices``, ``masks``, ``bits`` ``(B, h_g, w_g)`` lists.
        """
        b, _, h, w = x.shape
        t = self.lambda_to_t(lam).to(x.device).expand(b)
        cond_e, cond_d, cond_h = self._conds(t, device=x.device)
        coarse, medium, fine = route(x, coarse_ratio, medium_ratio, roi)
        masks = [fine, medium, coarse]
        ys = self.encoder(x, cond_e)
        codebook = self.quantizer.codebook
        if not self.cfg.rate_grad_to_codebook:
            codebook = codebook.detach()
        y_hats, indices, bits_maps, confidence = [], [], [], []
        index_bits = x.new_zeros(b)
        z_bits = x.new_zeros(b)
        cb_loss = commit = x.new_zeros(())
        with torch.autocast(device_type=x.device.type, enabled=False):
            cond_h = cond_h.float() if cond_h is not None else None
            for g in range(3):
                m = masks[g]
                y = ys[g].float()
                y_hat, idx, (l_cb, l_commit) = self.quantizer(y, m)
                hp = self.hyperprior(g)
                z = hp.h_a(y, m)
                z_tilde, z_lik = hp.prior(z)
                mu, scale = hp.h_s(z_tilde, m, cond_h)
                # y_hat's value is the code vector; its gradient reaches the encoder (and, with
                # rate_grad_to_codebook, the code itself).
                y_rate = self._rate_features(y, y_hat, idx)
                bits = embedding_bits(mu, scale, codebook, y_rate) * m[:, 0]
                index_bits = index_bits + bits.flatten(1).sum(1)
                z_bits = z_bits + (-torch.log2(z_lik)).flatten(1).sum(1)
                frac = m.sum() / m.numel()
                cb_loss = cb_loss + frac * l_cb
                commit = commit + frac * l_commit
                y_hats.append(y_hat * m)
                indices.append(idx)
                bits_maps.append(bits)
                log_s = torch.log2(scale.detach().clamp(SCALE_MIN, SCALE_MAX)).mean(1)
                confidence.append(self._confidence(bits.detach(), log_s, m))
        x_hat = self.decoder(y_hats, masks, confidence, cond_d)
        mask_bits = self._mask_bits(coarse, medium, coarse_ratio, medium_ratio)
        pixels = h * w
        return {
            "x_hat": x_hat,
            "bpp": (index_bits + z_bits + mask_bits) / pixels,
            "bpp_index": index_bits / pixels,
            "bpp_z": z_bits / pixels,
            "bpp_mask": mask_bits / pixels,
            "codebook_loss": cb_loss,
            "commit_loss": commit,
            "indices": indices,
            "masks": masks,
            "bits": bits_maps,
            "features": ys,
        }

    def _rate_features(self, y: Tensor, y_hat: Tensor, idx: Tensor) -> Tensor:
        """The code vectors as seen by the rate term: value ``e_idx``; gradient to the encoder scaled by
        ``encoder_rate_grad`` and, with ``rate_grad_to_codebook``, to the code itself."""
        w = self.cfg.encoder_rate_grad
        if not self.cfg.rate_grad_to_codebook and w == 1.0:
            return y_hat
        e = self.quantizer.embed(idx)
        if not self.cfg.rate_grad_to_codebook:
            e = e.detach()
        return e + w * (y - y.detach())

    def _confidence(self, bits: Tensor, mean_log2_scale: Tensor, mask: Tensor) -> Tensor:
        """Decoder side information ``(B, 2, h, w)`` = [bits / log2 K, mean log2 sigma / 8], masked;
        ``bits`` and ``mean_log2_scale`` are ``(B, h, w)``, ``mask`` ``(B, 1, h, w)``."""
        norm_bits = bits / math.log2(self.cfg.codebook_size)
        return torch.stack([norm_bits, mean_log2_scale / 8.0], dim=1) * mask

    @staticmethod
    def _mask_bits(coarse: Tensor, medium: Tensor, rc, rm) -> Tensor:
        b = coarse.shape[0]
        rc = torch.as_tensor(rc, dtype=torch.float32, device=coarse.device).expand(b)
        rm = torch.as_tensor(rm, dtype=torch.float32, device=coarse.device).expand(b)
        n16 = torch.full((b,), float(coarse[0].numel()), device=coarse.device)
        k16 = coarse.flatten(1).sum(1)
        avail = (F.interpolate(coarse, scale_factor=2.0, mode="nearest") == 0).float()
        n8 = avail.flatten(1).sum(1)
        k8 = medium.flatten(1).sum(1)
        return _binary_entropy_bits(rc, n16, k16) + _binary_entropy_bits(rm, n8, k8)

    # ------------------------------------------------------------ real coding
    @torch.no_grad()
    def update(self) -> None:
        """Fill the integer tables of z and of the static histogram from the current weights.

        Call once after training (checkpoints saved by ``hvq train`` are updated); the tables are
        saved with the model so that every machine codes with the same integers.
        """
        s = self.cfg.z_support
        for i, hp in enumerate(self.hyperpriors):
            pmf = hp.prior.pmf(s).cpu().numpy()
            self.z_freqs[i] = torch.from_numpy(tables.freqs_from_weights(tables.weights_from_probs(pmf)))
        counts = self.static.counts.cpu().numpy()
        self.static_freqs.copy_(torch.from_numpy(tables.static_table(counts, self.static.alpha)))
        self._exact_cache = None
        self._tag_cache = None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module.load_state_dict``, and forgets the model tag and the float64 copies of the
        hyper-synthesis, so that new weights never code with old tables."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._exact_cache = None
        self._tag_cache = None
        return result

    def _require_tables(self) -> None:
        if int(self.z_freqs[0, 0].sum()) != tables.TOTAL:
            raise RuntimeError("entropy tables are empty: run model.update() first")

    def model_tag(self) -> bytes:
        """8 bytes identifying the config and weights (stored in every file, checked on decode)."""
        if self._tag_cache is None:
            h = hashlib.sha256(repr(sorted(vars(self.cfg).items())).encode())
            for k, v in sorted(self.state_dict().items()):
                h.update(k.encode())
                v = v.detach().cpu()
                v = v.double() if v.is_floating_point() else v  # the same tag whatever the dtype
                h.update(v.contiguous().numpy().tobytes())
            self._tag_cache = h.digest()[:8]
        return self._tag_cache

    def _exact(self):
        """float64 CPU copies of what determines the index tables (h_s, rate embedding, codebook)."""
        if self._exact_cache is None:
            h_s = [copy.deepcopy(hp.h_s).double().cpu().eval() for hp in self.hyperpriors]
            emb = copy.deepcopy(self.embed_hyper).double().cpu().eval() if self.cfg.cond_dim else None
            cb_q = tables.quantize_mu(self.quantizer.codebook.detach().cpu().double().numpy())
            self._exact_cache = (h_s, emb, cb_q)
        return self._exact_cache

    @torch.no_grad()
    def _index_tables(self, g: int, z_hat: Tensor, mask: Tensor, t: Tensor):
        """Integer index tables of the masked positions of granularity g, computed in float64 on CPU.

        Returns ``(freqs (n, K), log2 scale map (1, h, w) float32, positions (n,) flat)``.
        """
        h_s, emb, cb_q = self._exact()
        cond = emb(t.double().cpu().view(1)) if emb is not None else None
        mask64 = mask.double().cpu()
        mu, scale = h_s[0 if self.cfg.shared_hyperprior else g](z_hat.double().cpu(), mask64, cond)
        d = mu.shape[1]
        pos = torch.nonzero(mask64[0, 0].flatten()).flatten().numpy()
        mu_flat = mu[0].reshape(d, -1).T.numpy()[pos]
        sc_flat = scale[0].reshape(scale.shape[1], -1).T.numpy()[pos]
        sc_idx = tables.quantize_log_scale(sc_flat)
        freqs = tables.gaussian_index_freqs(tables.quantize_mu(mu_flat), sc_idx, cb_q)
        # The decoder's confidence input uses the grid-snapped scale, so pixels depend on symbols only.
        grid = tables.quantize_log_scale(scale[0].numpy()).astype(np.float64)
        log_s = torch.from_numpy(tables.LOG2_SCALE_MIN + grid / tables.LOG2_SCALE_STEPS).mean(0)[None].float()
        return freqs, log_s, pos

    @torch.no_grad()
    def encode_features(self, x: Tensor, lam: float, roi: Tensor | None = None) -> Features:
        """The part of the analysis that does not depend on the granularity ratios (run it once per
        lambda when searching ratios): padding, encoder features and nearest codes.

        ``x``: ``(3, H, W)`` in [0, 1], any size up to ``MAX_CODEC_PIXELS``; ``roi``: optional ``(H, W)``.
        """
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(f"expected an image tensor (3, H, W), got {tuple(x.shape)}")
        height, width = x.shape[1:]
        if height * width > MAX_CODEC_PIXELS:
            raise ValueError(
                f"image of {width}x{height} pixels exceeds the codec limit of {MAX_CODEC_PIXELS} pixels "
                "(about 16 megapixels); downscale or tile it"
            )
        lam = float(np.float32(lam))
        dev = self.quantizer.codebook.device
        xp = _pad(x.float().clamp(0, 1).unsqueeze(0).to(dev))
        roi_p = None
        if roi is not None:
            roi = torch.as_tensor(roi, dtype=torch.float32)
            if roi.shape[-2:] != (height, width):
                raise ValueError(f"roi mask must be {height}x{width}, got {tuple(roi.shape[-2:])}")
            pad = (0, xp.shape[3] - width, 0, xp.shape[2] - height)
            roi_p = F.pad(roi.reshape(1, 1, height, width), pad).to(dev)
        t = self.lambda_to_t(lam)
        cond_e, _, _ = self._conds(t.view(1), device=dev)
        ys = [y.float() for y in self.encoder(xp, cond_e)]
        idxs = [self.quantizer.nearest(y) for y in ys]
        return Features(height, width, lam, t, xp, roi_p, ys, idxs)

    @torch.no_grad()
    def analyze(
        self,
        x: Tensor | Features,
        lam: float | None = None,
        coarse_ratio: float = 0.5,
        medium_ratio: float = 0.5,
        roi: Tensor | None = None,
        fit_colour: bool = True,
    ) -> Symbols:
        """Everything the bitstream will carry (masks, z, indices, integer tables, colour offset),
        without coding.

        ``x`` is an image ``(3, H, W)`` (then ``lam`` is required) or the output of
        :meth:`encode_features`. ``fit_colour`` runs the decoder once to measure the reconstruction's
        per-channel mean error and stores the correction (:meth:`fit_colour_offset`); rate control
        skips it while it searches (the offset never changes the file size).
        """
        self._require_tables()
        feats = x if isinstance(x, Features) else self.encode_features(x, lam, roi)
        rc, rm = float(np.float32(coarse_ratio)), float(np.float32(medium_ratio))
        coarse, medium, fine = route(feats.x_padded, rc, rm, feats.roi_padded)
        masks = [fine, medium, coarse]
        s = self.cfg.z_support
        z_hats, freqs, log_scales = [], [], []
        for g in range(3):
            z = self.hyperprior(g).h_a(feats.ys[g], masks[g])
            z_hat = torch.round(z).clamp(-s, s).cpu()
            f, log_s, _ = self._index_tables(g, z_hat, masks[g], feats.t)
            z_hats.append(z_hat)
            freqs.append(f)
            log_scales.append(log_s)
        idxs = [i.cpu() for i in feats.indices]
        masks = [m.cpu() for m in masks]
        sym = Symbols(feats.height, feats.width, feats.lam, rc, rm, masks, z_hats, idxs, freqs, log_scales)
        return self.fit_colour(sym, feats) if fit_colour else sym

    @torch.no_grad()
    def fit_colour(self, sym: Symbols, feats: Features) -> Symbols:
        """``sym`` with its colour offset fitted to the image of ``feats`` (one decoder pass)."""
        original = feats.x_padded[0, :, : feats.height, : feats.width].cpu()
        sym.colour_offset = self.fit_colour_offset(self._decode(sym), original)
        return sym

    @staticmethod
    def fit_colour_offset(decoded: Tensor, original: Tensor, rounds: int = 3) -> tuple[int, int, int]:
        """Per-channel offset (in ``1/COLOUR_STEPS`` of a level) that makes the mean of the clipped
        reconstruction equal the original's: the global colour correction the file carries.

        ``decoded``: the decoder's unclipped output ``(3, H, W)``; ``original``: ``(3, H, W)`` in [0, 1].
        A few fixed-point rounds absorb the clipping at 0 and 1.
        """
        target = original.double().mean((1, 2))
        offset = torch.zeros(3, dtype=torch.float64)
        for _ in range(rounds):
            shifted = (decoded.double() + (offset * _COLOUR_STEP).view(3, 1, 1)).clamp(0, 1)
            offset = offset + torch.round((target - shifted.mean((1, 2))) / _COLOUR_STEP)
            offset = offset.clamp(-COLOUR_MAX, COLOUR_MAX)
        return tuple(int(v) for v in offset)

    @torch.no_grad()
    def estimate_bits(self, feats: Features, coarse_ratio: float, medium_ratio: float) -> float:
        """Estimated file size in bits for these ratios (float model, no tables, no coder): index,
        z and mask information plus the container overhead. Used by rate control to search fast."""
        rc, rm = float(np.float32(coarse_ratio)), float(np.float32(medium_ratio))
        coarse, medium, fine = route(feats.x_padded, rc, rm, feats.roi_padded)
        masks = [fine, medium, coarse]
        s = self.cfg.z_support
        cond_h = self._conds(feats.t.view(1), device=feats.x_padded.device)[2]
        total = float(self._mask_bits(coarse, medium, rc, rm).sum())
        for g in range(3):
            hp = self.hyperprior(g)
            z_hat = torch.round(hp.h_a(feats.ys[g], masks[g])).clamp(-s, s)
            total += float(-torch.log2(hp.prior.likelihood(z_hat)).sum())
            mu, scale = hp.h_s(z_hat, masks[g], cond_h)
            sel = masks[g][0, 0].flatten() > 0  # only the coded positions, as a (1, D, N, 1) map
            mu_n, scale_n = (v[0].flatten(1)[:, sel][None, :, :, None] for v in (mu, scale))
            idx_n = feats.indices[g][0].flatten()[sel][None, :, None]
            total += float(index_bits(mu_n, scale_n, self.quantizer.codebook, idx_n).sum())
        return total + 8 * CONTAINER_OVERHEAD_BYTES

    @torch.no_grad()
    def synthesize(self, sym: Symbols) -> Tensor:
        """Image from decoded symbols: ``(3, H, W)`` in [0, 1] with the file's colour offset applied.
        Used by decompress *and* reconstruct."""
        offset = torch.tensor(sym.colour_offset, dtype=torch.float32).view(3, 1, 1) * _COLOUR_STEP
        return (self._decode(sym) + offset).clamp(0, 1)

    @torch.no_grad()
    def _decode(self, sym: Symbols) -> Tensor:
        """The decoder network's output for the symbols, cropped, before the offset and clipping."""
        dev = self.quantizer.codebook.device
        t = self.lambda_to_t(sym.lam)
        _, cond_d, _ = self._conds(t.view(1), device=dev)
        embeds, masks, confidence = [], [], []
        for g in range(3):
            m = sym.masks[g].to(dev)
            idx = sym.indices[g].to(dev) * m[:, 0].long()
            embeds.append(self.quantizer.embed(idx) * m)
            masks.append(m)
            pos = torch.nonzero(m[0, 0].flatten().cpu()).flatten()
            bits = torch.zeros(m[0, 0].numel(), dtype=torch.float64)
            if len(pos):
                chosen = sym.indices[g][0].flatten()[pos].numpy()
                bits[pos] = torch.from_numpy(tables.symbol_bits(sym.freqs[g], chosen))
            bits = bits.view(1, *m.shape[-2:]).float().to(dev)
            confidence.append(self._confidence(bits, sym.log_scale[g].to(dev), m))
        x_hat = self.decoder(embeds, masks, confidence, cond_d)
        return x_hat[0, :, : sym.height, : sym.width].float().cpu()

    @torch.no_grad()
    def reconstruct(
        self, x: Tensor, lam: float, coarse_ratio: float = 0.5, medium_ratio: float = 0.5, roi=None
    ):
        """The network's own reconstruction through the coding path, without the range coder.
        ``decompress(compress(x, ...))`` equals this exactly (a test checks it)."""
        return self.synthesize(self.analyze(x, lam, coarse_ratio, medium_ratio, roi))

    @torch.no_grad()
    def compress(
        self,
        x: Tensor,
        lam: float | None = None,
        coarse_ratio: float = 0.5,
        medium_ratio: float = 0.5,
        roi: Tensor | None = None,
        target_bpp: float | None = None,
    ) -> bytes:
        """Encode ``x (3, H, W)`` in [0, 1] (any size) to ``.hvq`` bytes.

        ``lam`` defaults to the geometric middle of the trained range; ``roi`` is an optional
        ``(H, W)`` 0/1 mask of pixels that must be coded at the fine granularity. With
        ``target_bpp`` the ratios are searched on the real file size (:mod:`hvq.ratecontrol`) and
        ``coarse_ratio``/``medium_ratio`` are ignored; a target the model cannot reach raises
        ``hvq.ratecontrol.RateTargetError`` naming the reachable range.
        """
        if lam is None:
            lam = math.sqrt(self.cfg.lambda_min * self.cfg.lambda_max)
        if target_bpp is not None:
            from hvq.ratecontrol import compress_to_bpp

            return compress_to_bpp(self, x, target_bpp, lams=[lam], roi=roi).data
        return self.encode(self.analyze(x, lam, coarse_ratio, medium_ratio, roi))

    def _mask_symbols(self, masks: list[Tensor]) -> tuple[np.ndarray, np.ndarray]:
        coarse = masks[2][0, 0].flatten().numpy().astype(np.int64)
        avail = (F.interpolate(masks[2], scale_factor=2.0, mode="nearest") == 0)[0, 0].flatten().numpy()
        medium = masks[1][0, 0].flatten().numpy().astype(np.int64)[avail]
        return coarse, medium

    def encode(self, sym: Symbols) -> bytes:
        coarse_sym, medium_sym = self._mask_symbols(sym.masks)
        coarse_bytes = coder.encode_symbols(coarse_sym, _mask_table(sym.coarse_ratio))
        medium_bytes = coder.encode_symbols(medium_sym, _mask_table(sym.medium_ratio))
        # The two mask sub-streams share one slot: a 4-byte length of the first, then both.
        streams = [len(coarse_bytes).to_bytes(4, "little") + coarse_bytes + medium_bytes]
        z_syms, idx_syms = [], []
        s = self.cfg.z_support
        for g in range(3):
            zs = (sym.z_hat[g][0].long() + s).numpy()
            zf = self._z_table(g, zs.shape)
            z_syms.append(zs.flatten())
            streams.append(coder.encode_symbols(zs.flatten(), zf))
        for g in range(3):
            pos = torch.nonzero(sym.masks[g][0, 0].flatten()).flatten().numpy()
            ks = sym.indices[g][0].flatten().numpy()[pos]
            idx_syms.append(ks)
            streams.append(coder.encode_symbols(ks, sym.freqs[g]))
        crc = symbols_crc32(coarse_sym, medium_sym, *z_syms, *idx_syms)
        knobs = (sym.lam, sym.coarse_ratio, sym.medium_ratio, *map(float, sym.colour_offset))
        return Container(sym.height, sym.width, self.model_tag(), knobs, streams, crc).to_bytes()

    def static_index_streams(self, sym: Symbols, table: np.ndarray | None = None) -> list[bytes]:
        """The ablation baseline: the same indices coded with one static histogram table.

        ``table`` is a ``(K,)`` frequency table (``hvq.tables``); by default the model's ``static_freqs``
        (an exponential moving histogram of the training indices). Returns the three index streams
        (fine, medium, coarse) as real range-coded bytes; no z is needed for a static model.
        """
        if table is None:
            if int(self.static_freqs.sum()) != tables.TOTAL:
                raise RuntimeError("static histogram table is empty: run model.update() first")
            table = self.static_freqs.cpu().numpy()
        out = []
        for g in range(3):
            pos = torch.nonzero(sym.masks[g][0, 0].flatten()).flatten().numpy()
            out.append(coder.encode_symbols(sym.indices[g][0].flatten().numpy()[pos], table))
        return out

    def _z_table(self, g: int, shape: tuple[int, ...]) -> np.ndarray:
        """Per-element z tables ``(C*h*w, 2S+1)`` for z of shape ``(C, h, w)``."""
        zf = self.z_freqs[0 if self.cfg.shared_hyperprior else g].cpu().numpy()
        ch = np.repeat(np.arange(shape[0]), int(np.prod(shape[1:])))
        return zf[ch]

    @torch.no_grad()
    def decompress(self, data: bytes) -> Tensor:
        """Decode ``.hvq`` bytes to an image ``(3, H, W)`` float in [0, 1].

        Raises:
            BitstreamError: corrupt, truncated or foreign data, another model, or a decoded-symbol
                CRC mismatch (encoder and decoder disagreed on a probability table).
        """
        self._require_tables()
        c = Container.from_bytes(data)
        if c.height * c.width > MAX_CODEC_PIXELS:
            raise BitstreamError(
                f"header declares a {c.width}x{c.height} image ({c.height * c.width} pixels), above the "
                f"codec limit of {MAX_CODEC_PIXELS} pixels (no hvq encoder writes such a file)"
            )
        if c.model_tag != self.model_tag():
            raise BitstreamError(
                f"file was written by another model (tag {c.model_tag.hex()}, "
                f"this model {self.model_tag().hex()})"
            )
        if len(c.knobs) != 6 or len(c.streams) != 7:
            raise BitstreamError("unexpected knob or stream count for this model")
        lam, rc, rm = c.knobs[:3]
        if not (0 <= rc <= 1 and 0 <= rm <= 1) or not math.isfinite(lam):
            raise BitstreamError("invalid knob values in header")
        colour = c.knobs[3:]
        if not all(math.isfinite(v) and v == round(v) and abs(v) <= COLOUR_MAX for v in colour):
            raise BitstreamError("invalid colour offset in header")
        try:
            t = self.lambda_to_t(lam)
        except ValueError as exc:
            raise BitstreamError(str(exc)) from exc
        hp, wp = _padded_size(c.height, c.width)
        n16 = (hp // 16) * (wp // 16)
        mstream = c.streams[0]
        if len(mstream) < 4:
            raise BitstreamError("mask stream too short")
        split = int.from_bytes(mstream[:4], "little")
        if split > len(mstream) - 4:
            raise BitstreamError("mask stream split points past its end")
        coarse_sym = coder.decode_symbols(mstream[4 : 4 + split], _mask_table(rc), count=n16)
        coarse = torch.from_numpy(coarse_sym.astype(np.float32)).view(1, 1, hp // 16, wp // 16)
        avail = (F.interpolate(coarse, scale_factor=2.0, mode="nearest") == 0)[0, 0].flatten().numpy()
        medium_sym = coder.decode_symbols(mstream[4 + split :], _mask_table(rm), count=int(avail.sum()))
        medium_flat = np.zeros(avail.size, dtype=np.float32)
        medium_flat[avail] = medium_sym
        medium = torch.from_numpy(medium_flat).view(1, 1, hp // 8, wp // 8)
        fine = F.interpolate(
            torch.from_numpy(avail.astype(np.float32) - medium_flat).view(1, 1, hp // 8, wp // 8),
            scale_factor=2.0,
            mode="nearest",
        )
        masks = [fine, medium, coarse]
        s = self.cfg.z_support
        z_hats, z_syms = [], []
        for g in range(3):
            hg, wg = hp // STRIDES[g], wp // STRIDES[g]
            zshape = (self.cfg.z_channels, _z_side(hg), _z_side(wg))
            zs = coder.decode_symbols(c.streams[1 + g], self._z_table(g, zshape))
            z_syms.append(zs)
            z_hats.append(torch.from_numpy(zs - s).float().view(1, *zshape))
        idxs, freqs, log_scales, idx_syms = [], [], [], []
        for g in range(3):
            f, log_s, pos = self._index_tables(g, z_hats[g], masks[g], t)
            ks = coder.decode_symbols(c.streams[4 + g], f)
            flat = np.zeros(masks[g][0, 0].numel(), dtype=np.int64)
            flat[pos] = ks
            idxs.append(torch.from_numpy(flat).view(1, *masks[g].shape[-2:]))
            freqs.append(f)
            log_scales.append(log_s)
            idx_syms.append(ks)
        if symbols_crc32(coarse_sym, medium_sym, *z_syms, *idx_syms) != c.symbols_crc:
            raise BitstreamError(
                "decoded symbols do not match the encoder's CRC32: the probability tables differ "
                "(another model version or device) or the file is damaged"
            )
        offset = tuple(int(v) for v in colour)
        sym = Symbols(c.height, c.width, lam, rc, rm, masks, z_hats, idxs, freqs, log_scales, offset)
        return self.synthesize(sym)


def _z_side(n: int) -> int:
    """Side of z for a granularity side n: two stride-2 convolutions, ceil(ceil(n / 2) / 2)."""
    return ((n + 1) // 2 + 1) // 2


def _padded_size(h: int, w: int) -> tuple[int, int]:
    return -(-h // PAD_MULTIPLE) * PAD_MULTIPLE, -(-w // PAD_MULTIPLE) * PAD_MULTIPLE


def _pad(x: Tensor) -> Tensor:
    """Replicate-pad ``(B, C, H, W)`` on the bottom/right to multiples of ``PAD_MULTIPLE``."""
    h, w = x.shape[-2:]
    hp, wp = _padded_size(h, w)
    if (hp, wp) == (h, w):
        return x
    return F.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
