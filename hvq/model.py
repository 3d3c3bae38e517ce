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
* ``analyze`` / ``synthesize``: image -> :class:`hvq.symbols.Symbols` (rounded z, integer tables from
  :mod:`hvq.entropy`, exactly as the decoder will compute them) -> image.
* ``compress`` / ``decompress`` (real bits): ``analyze`` then :mod:`hvq.bitstream` (constriction range
  coding in the ``.hvq`` container), and back. Rate control (:mod:`hvq.ratecontrol`) sits on top.
* ``update()`` fills the integer tables of z and of the static histogram (CompressAI style); it is
  called when a checkpoint is saved, and ``compress`` refuses to run without it.

One image through the files, in order: ``model.py`` (``encode_features``, ``analyze``) ->
``nets/router.py`` (masks) -> ``entropy.py`` (z, tables) -> ``bitstream.py`` -> ``coder.py`` ->
``container.py``; and back: ``bitstream.decode`` -> ``entropy.py`` -> ``model.synthesize``.

The rate knob: lambda (the weight of distortion against rate) is an *input* of the encoder, the
hyper-synthesis and the decoder (FiLM), sampled per batch in training, so one model covers a
continuous range of rates; the granularity ratios are a second knob. The container stores the knob
values ``(lambda, coarse_ratio, medium_ratio)`` and a per-channel colour offset (integers, in
``1/COLOUR_STEPS`` of a level, fitted by the encoder on the decoder's own output, see
:meth:`HVQCodec.fit_colour_offset`), so the decoder needs nothing else.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hvq import bitstream, tables, tiles
from hvq.bitstream import CONTAINER_OVERHEAD_BYTES
from hvq.config import ModelConfig
from hvq.entropy import ExactParameters, hyper_parameters, mask_bits, side_latent
from hvq.nets import Decoder, Encoder, Hyperprior, VectorQuantizer, integer, route
from hvq.nets.blocks import RateEmbedding
from hvq.nets.router import cell_entropies
from hvq.probability import SCALE_MAX, SCALE_MIN, StaticHistogram, coded_index_bits, embedding_bits
from hvq.symbols import (
    COLOUR_MAX,
    COLOUR_STEP,
    COLOUR_STEPS,
    GRANULARITIES,
    MAX_CODEC_PIXELS,
    STREAM_NAMES,
    STRIDES,
    Features,
    Symbols,
    coded_positions,
    pad,
)

#: Buffers of the integer hyper-synthesis (filled by ``update()``; computed on load for older weights).
FILM_KEYS = ("film_gamma_q", "film_beta_q")

__all__ = [  # the codec, and the names its users read from here
    "COLOUR_MAX", "COLOUR_STEPS", "CONTAINER_OVERHEAD_BYTES", "GRANULARITIES", "MAX_CODEC_PIXELS",
    "STREAM_NAMES", "STRIDES", "Features", "HVQCodec", "Symbols",
]  # fmt: skip


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
        # FiLM of the integer hyper-synthesis per lambda index (hvq.nets.integer.film_tables): stored,
        # because the rate embedding's sin, cos and SiLU are not bit-exact across machines.
        film_shape = (n_hp, integer.LAMBDA_STEPS, cfg.hyper_channels)
        self.register_buffer("film_gamma_q", torch.zeros(film_shape, dtype=torch.int64))
        self.register_buffer("film_beta_q", torch.zeros(film_shape, dtype=torch.int64))
        self._exact_cache: ExactParameters | None = None
        self._tag_cache: bytes | None = None

    # ------------------------------------------------------------------ knobs
    def channels_last(self) -> HVQCodec:
        """Keep the encoder's and decoder's convolution weights in channels-last order. On a CPU,
        oneDNN then runs both networks about a quarter faster (README "Speed"). Only the float
        rounding of their outputs changes: the weights, the model tag and the decoding of a file to
        symbols do not. :func:`hvq.pretrained.load_pretrained` does it for a CPU model."""
        self.encoder.to(memory_format=torch.channels_last)
        self.decoder.to(memory_format=torch.channels_last)
        return self

    def lambda_to_t(self, lam: Tensor | float) -> Tensor:
        """Normalised log-lambda in [0, 1] (the rate input); errors outside the trained range."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lo, hi = self.cfg.lambda_min, self.cfg.lambda_max
        if ((lam < lo * (1 - 1e-6)) | (lam > hi * (1 + 1e-6))).any():
            raise ValueError(f"lambda must lie in the trained range [{lo}, {hi}]")
        if hi == lo:
            return torch.zeros_like(lam)
        return ((lam.log() - math.log(lo)) / (math.log(hi) - math.log(lo))).clamp(0, 1)

    def lambda_index(self, lam: float) -> int:
        """The file's lambda: the index of the nearest of ``LAMBDA_STEPS`` grid values of ``t``."""
        return integer.lambda_index(float(self.lambda_to_t(lam)))

    def grid_lambda(self, index: int) -> float:
        """Lambda of a grid index (what the codec uses for a requested lambda, and the decoder reads)."""
        lo, hi = self.cfg.lambda_min, self.cfg.lambda_max
        return math.exp(math.log(lo) + integer.lambda_grid_t(index) * (math.log(hi) - math.log(lo)))

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
                hyper = hyper_parameters(self.hyperprior(g), y, m, cond_h)
                mu, scale = hyper.mu, hyper.scale
                # y_hat's value is the code vector; its gradient reaches the encoder (and, with
                # rate_grad_to_codebook, the code itself).
                y_rate = self._rate_features(y, y_hat, idx)
                bits = embedding_bits(mu, scale, codebook, y_rate) * m[:, 0]
                index_bits = index_bits + bits.flatten(1).sum(1)
                z_bits = z_bits + hyper.z_bits
                frac = m.sum() / m.numel()
                cb_loss = cb_loss + frac * l_cb
                commit = commit + frac * l_commit
                y_hats.append(y_hat * m)
                indices.append(idx)
                bits_maps.append(bits)
                log_s = torch.log2(scale.detach().clamp(SCALE_MIN, SCALE_MAX)).mean(1)
                confidence.append(self._confidence(bits.detach(), log_s, m))
        x_hat = self.decoder(y_hats, masks, confidence, cond_d)
        m_bits = mask_bits(coarse, medium, coarse_ratio, medium_ratio)
        pixels = h * w
        return {
            "x_hat": x_hat,
            "bpp": (index_bits + z_bits + m_bits) / pixels,
            "bpp_index": index_bits / pixels,
            "bpp_z": z_bits / pixels,
            "bpp_mask": m_bits / pixels,
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

    # ------------------------------------------------------------ real coding
    @torch.no_grad()
    def update(self) -> None:
        """Fill the integer tables of z and of the static histogram from the current weights.

        Call once after training (checkpoints saved by ``hvq train`` are updated); the tables are
        saved with the model so that every machine codes with the same integers.
        """
        s = self.cfg.z_support
        for i, hp in enumerate(self.hyperpriors):
            pmf = copy.deepcopy(hp.prior).cpu().pmf(s).numpy()  # CPU arithmetic on any device
            self.z_freqs[i] = torch.from_numpy(tables.freqs_from_weights(tables.weights_from_probs(pmf)))
        counts = self.static.counts.cpu().numpy()
        self.static_freqs.copy_(torch.from_numpy(tables.static_table(counts, self.static.alpha)))
        self._fill_film_tables()

    def _fill_film_tables(self) -> None:
        embed = self.embed_hyper if self.cfg.cond_dim else None
        for i, hp in enumerate(self.hyperpriors):
            gamma_q, beta_q = integer.film_tables(hp.h_s, embed)
            self.film_gamma_q[i], self.film_beta_q[i] = gamma_q, beta_q
        self._exact_cache = None
        self._tag_cache = None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module.load_state_dict``, and forgets the model tag and the integer copy of the
        hyper-synthesis, so that new weights never code with old tables.

        Weights saved before the integer hyper-synthesis (no ``film_gamma_q``/``film_beta_q``) load
        too: their FiLM tables are computed here (see :func:`hvq.nets.integer.film_tables`).
        """
        missing = [k for k in FILM_KEYS if k not in state_dict]
        if missing:
            state_dict = {**state_dict, **{k: getattr(self, k) for k in missing}}
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if missing:
            with torch.no_grad():
                self._fill_film_tables()
        self._exact_cache = None
        self._tag_cache = None
        return result

    def _require_tables(self) -> None:
        if int(self.z_freqs[0, 0].sum()) != tables.TOTAL or not bool(self.film_gamma_q.any()):
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

    def index_tables(self, g: int, z_hat: Tensor, mask: Tensor, lambda_index: int):
        """Integer index tables of granularity ``g`` from its decoded ``z_hat`` (see
        :meth:`hvq.entropy.ExactParameters.index_tables`); what encoder and decoder both run."""
        if self._exact_cache is None:
            self._exact_cache = ExactParameters(
                self.hyperpriors, self.film_gamma_q, self.film_beta_q, self.quantizer.codebook,
                self.cfg.z_support,
            )  # fmt: skip
        return self._exact_cache.index_tables(g, z_hat, mask, lambda_index)

    def z_tables(self, g: int, shape: tuple[int, ...]) -> np.ndarray:
        """Per-element z tables ``(C*h*w, 2S+1)`` for z of shape ``(C, h, w)``."""
        zf = self.z_freqs[0 if self.cfg.shared_hyperprior else g].cpu().numpy()
        return zf[np.repeat(np.arange(shape[0]), int(np.prod(shape[1:])))]

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
        index = self.lambda_index(lam)
        lam = self.grid_lambda(index)  # the file carries the index: the codec works at its lambda
        dev = self.quantizer.codebook.device
        xp = pad(x.float().clamp(0, 1).unsqueeze(0).to(dev))
        t = torch.tensor(integer.lambda_grid_t(index), dtype=torch.float64)
        cond_e, _, _ = self._conds(t.view(1), device=dev)
        ys = [y.float() for y in self.encoder(xp, cond_e)]
        idxs = [self.quantizer.nearest(y) for y in ys]
        return self.with_roi(Features(height, width, lam, t, xp, None, ys, idxs, cell_entropies(xp)), roi)

    @staticmethod
    def with_roi(feats: Features, roi: Tensor | None) -> Features:
        """``feats`` with another region of interest (``(H, W)`` 0/1, or ``None``): the encoder's
        features do not depend on it, only the router does."""
        height, width = feats.height, feats.width
        if roi is None:
            return dataclasses.replace(feats, roi_padded=None)
        roi = torch.as_tensor(roi, dtype=torch.float32)
        if roi.shape[-2:] != (height, width):
            raise ValueError(f"roi mask must be {height}x{width}, got {tuple(roi.shape[-2:])}")
        xp = feats.x_padded
        margins = (0, xp.shape[3] - width, 0, xp.shape[2] - height)
        roi_p = F.pad(roi.reshape(1, 1, height, width), margins).to(xp.device)
        return dataclasses.replace(feats, roi_padded=roi_p)

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
        coarse, medium, fine = route(feats.x_padded, rc, rm, feats.roi_padded, feats.entropies)
        masks = [fine, medium, coarse]
        z_hats, freqs, log_scales = [], [], []
        for g in range(3):
            z_hat = side_latent(self.hyperprior(g), feats.ys[g], masks[g], self.cfg.z_support).cpu()
            f, log_s, _ = self.index_tables(g, z_hat, masks[g], self.lambda_index(feats.lam))
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
        return self.fit_colour_and_synthesize(sym, feats)[0]

    @torch.no_grad()
    def fit_colour_and_synthesize(self, sym: Symbols, feats: Features) -> tuple[Symbols, Tensor]:
        """:meth:`fit_colour`, and from the same decoder pass the image ``(3, H, W)`` that the file
        will decode to (:meth:`synthesize` of the fitted symbols)."""
        decoded = self._decode(sym)
        original = feats.x_padded[0, :, : feats.height, : feats.width].cpu()
        sym.colour_offset = self.fit_colour_offset(decoded, original)
        return sym, self._with_offset(decoded, sym.colour_offset)

    @staticmethod
    def _with_offset(decoded: Tensor, colour_offset: tuple[int, int, int]) -> Tensor:
        """The decoder's output with the file's colour offset added, clipped to [0, 1]."""
        offset = torch.tensor(colour_offset, dtype=torch.float32).view(3, 1, 1) * COLOUR_STEP
        return (decoded + offset).clamp(0, 1)

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
            shifted = (decoded.double() + (offset * COLOUR_STEP).view(3, 1, 1)).clamp(0, 1)
            offset = offset + torch.round((target - shifted.mean((1, 2))) / COLOUR_STEP)
            offset = offset.clamp(-COLOUR_MAX, COLOUR_MAX)
        return tuple(int(v) for v in offset)

    @torch.no_grad()
    def estimate_bits(self, feats: Features, coarse_ratio: float, medium_ratio: float) -> float:
        """Estimated file size in bits for these ratios (float model, no tables, no coder): index,
        z and mask information plus the container overhead. Used by rate control to search fast."""
        rc, rm = float(np.float32(coarse_ratio)), float(np.float32(medium_ratio))
        coarse, medium, fine = route(feats.x_padded, rc, rm, feats.roi_padded, feats.entropies)
        masks = [fine, medium, coarse]
        cond_h = self._conds(feats.t.view(1), device=feats.x_padded.device)[2]
        total = float(mask_bits(coarse, medium, rc, rm).sum())
        for g in range(3):
            hyper = hyper_parameters(self.hyperprior(g), feats.ys[g], masks[g], cond_h, self.cfg.z_support)
            total += float(hyper.z_bits.sum())
            sel = masks[g][0, 0].flatten() > 0  # only the coded positions, as (N, D) rows
            mu_n, scale_n = (v[0].flatten(1)[:, sel].T for v in (hyper.mu, hyper.scale))
            idx_n = feats.indices[g][0].flatten()[sel]
            total += float(coded_index_bits(mu_n, scale_n, self.quantizer.codebook, idx_n))
        return total + 8 * CONTAINER_OVERHEAD_BYTES

    @torch.no_grad()
    def synthesize(self, sym: Symbols) -> Tensor:
        """Image from decoded symbols: ``(3, H, W)`` in [0, 1] with the file's colour offset applied.
        Used by decompress *and* reconstruct."""
        return self._with_offset(self._decode(sym), sym.colour_offset)

    @torch.no_grad()
    def _decode(self, sym: Symbols) -> Tensor:
        """The decoder network's output for the symbols, cropped, before the offset and clipping."""
        dev = self.quantizer.codebook.device
        t = torch.tensor(integer.lambda_grid_t(self.lambda_index(sym.lam)), dtype=torch.float64)
        _, cond_d, _ = self._conds(t.view(1), device=dev)
        embeds, masks, confidence = [], [], []
        for g in range(3):
            m = sym.masks[g].to(dev)
            idx = sym.indices[g].to(dev) * m[:, 0].long()
            embeds.append(self.quantizer.embed(idx) * m)
            masks.append(m)
            pos = torch.from_numpy(coded_positions(m))
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
        ``decompress(compress(x, ...))`` equals this exactly (a test checks it). An image above
        ``hvq.tiles.TILE_PIXELS`` is coded in tiles, so it goes through the file."""
        if x.dim() == 3 and tiles.needs_tiles(*x.shape[1:]):
            return self.decompress(self.compress(x, lam, coarse_ratio, medium_ratio, roi))
        return self.synthesize(self.analyze(x, lam, coarse_ratio, medium_ratio, roi))

    @torch.no_grad()
    def compress(
        self,
        x: Tensor,
        lam: float | None = None,
        coarse_ratio: float = 0.5,
        medium_ratio: float = 0.5,
        roi: Tensor | None = None,
    ) -> bytes:
        """Encode ``x (3, H, W)`` in [0, 1] (any size up to ``MAX_CODEC_PIXELS``) to ``.hvq`` bytes at
        these knobs.

        ``lam`` defaults to the geometric middle of the trained range; ``roi`` is an optional
        ``(H, W)`` 0/1 mask of pixels that must be coded at the fine granularity. To ask for a file
        size instead, use :func:`hvq.ratecontrol.compress_to_bpp`. An image above
        ``hvq.tiles.TILE_PIXELS`` is coded tile by tile (:mod:`hvq.tiles`), in bounded memory.
        """
        if lam is None:
            lam = math.sqrt(self.cfg.lambda_min * self.cfg.lambda_max)
        if x.dim() == 3 and tiles.needs_tiles(*x.shape[1:]):
            return tiles.encode_tiles(
                x,
                None if roi is None else torch.as_tensor(roi),
                lambda x_tile, roi_tile: self.encode(
                    self.analyze(x_tile, lam, coarse_ratio, medium_ratio, roi_tile)
                ),
                self.model_tag(),
            )
        return self.encode(self.analyze(x, lam, coarse_ratio, medium_ratio, roi))

    def encode(self, sym: Symbols) -> bytes:
        """``.hvq`` bytes of analysed symbols (:func:`hvq.bitstream.encode`)."""
        return bitstream.encode(self, sym)

    def static_index_streams(self, sym: Symbols, table: np.ndarray | None = None) -> list[bytes]:
        """The ablation baseline: the same indices coded with one static ``(K,)`` histogram table, by
        default the model's ``static_freqs`` (a moving histogram of the training indices)."""
        if table is None:
            if int(self.static_freqs.sum()) != tables.TOTAL:
                raise RuntimeError("static histogram table is empty: run model.update() first")
            table = self.static_freqs.cpu().numpy()
        return bitstream.static_index_streams(sym, table)

    @torch.no_grad()
    def decompress(self, data: bytes) -> Tensor:
        """Decode ``.hvq`` bytes to an image ``(3, H, W)`` float in [0, 1].

        Raises:
            BitstreamError: corrupt, truncated or foreign data, another model, or a decoded-symbol
                CRC mismatch (encoder and decoder disagreed on a probability table).
        """
        self._require_tables()
        if tiles.is_tiled_file(data):  # a large image: tile by tile, in bounded memory (hvq.tiles)
            return tiles.decode_tiles(
                data, self.model_tag(), lambda tile: self.synthesize(bitstream.decode(self, tile))
            )
        return self.synthesize(bitstream.decode(self, data))
