"""Refit the hyperpriors of a trained codec on the rate alone, with everything else frozen.

The hyperpriors (``h_a``, ``h_s``, the factorised priors of z, and the rate embedding that conditions
``h_s``) get gradients from the rate term only: the decoder's confidence input is detached. So with
the encoder, codebook and decoder frozen the indices do not move, and training the hyperpriors is a
pure entropy-model fit (as CompressAI's ``update()`` refits its tables, but for the networks):

    minimise   sum over coded positions of -log2 p(k | z_hat)   +   bits of z_hat

over random crops and knobs (lambda, ratios). Without the decoder and LPIPS a step costs a fraction of
a training step, so the hyperpriors see many more crops per CPU minute. The decoder reads the
hyperprior's bits and scales as side information, so a refit can move the reconstruction a little:
``benchmarks/gpu_sweep.py --budget 0`` measures both on held-out photos (README "The shipped model").

    python benchmarks/hyperprior_refit.py --init checkpoints/continue.pt --run-dir runs/hp_refit
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from hvq.entropy import hyper_parameters
from hvq.model import HVQCodec
from hvq.nets import route
from hvq.probability import coded_index_bits


def hyperprior_parameters(model: HVQCodec) -> list[nn.Parameter]:
    """Freeze every parameter but the hyperpriors' and ``embed_hyper``'s, and return those."""
    trained = list(model.hyperpriors.parameters())
    if model.cfg.cond_dim:
        trained += list(model.embed_hyper.parameters())
    ids = {id(p) for p in trained}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return trained


def rate_bits(
    model: HVQCodec, x: Tensor, lam: Tensor, coarse: Tensor, medium: Tensor
) -> tuple[Tensor, Tensor]:
    """``(index bits, z bits)`` of a batch ``x (B, 3, H, W)``, each summed over the batch (0-dim).

    The encoder, router and nearest codes run without gradients; the index bits are those of the
    coded positions only (:func:`hvq.probability.coded_index_bits`). With the model in eval mode
    they equal ``model(x, ...)``'s ``bpp_index`` and ``bpp_z`` times the pixels; in train mode z gets
    uniform noise, as in training.
    """
    t = model.lambda_to_t(lam).to(x.device).expand(x.shape[0])
    cond_enc, _, cond_hyper = model._conds(t, device=x.device)
    with torch.no_grad():
        masks = list(reversed(route(x, coarse, medium, None)))  # fine, medium, coarse
        ys = [y.float() for y in model.encoder(x, cond_enc)]
        indices = [model.quantizer.nearest(y) for y in ys]
    index_bits = z_bits = x.new_zeros((), dtype=torch.float64)
    for g in range(3):
        hyper = hyper_parameters(model.hyperprior(g), ys[g], masks[g], cond_hyper)
        keep = masks[g][:, 0] > 0
        mu, scale = (v.permute(0, 2, 3, 1)[keep] for v in (hyper.mu, hyper.scale))
        index_bits = index_bits + coded_index_bits(mu, scale, model.quantizer.codebook, indices[g][keep])
        z_bits = z_bits + hyper.z_bits.sum()
    return index_bits, z_bits


def refit_hyperpriors(
    model: HVQCodec,
    batches: Iterable[Tensor],
    knobs: Callable[[int], tuple[Tensor, Tensor, Tensor]],
    seconds: float,
    lr: float = 3e-4,
    lr_min: float = 1e-5,
    on_step: Callable[[int, float, float, float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> int:
    """Train the hyperpriors of ``model`` on ``index + z`` bits per pixel for ``seconds`` of wall time
    (cosine learning rate from ``lr`` to ``lr_min`` on the clock), then ``update()`` its tables.

    ``batches`` yields ``(B, 3, H, W)`` crops; ``knobs(B)`` gives per-image ``(lambda, coarse ratio,
    medium ratio)`` (:func:`hvq.train.sample_knobs`); ``on_step(step, lr, bpp_index, bpp_z)`` is called
    after every step. Returns the number of steps. The model is left in eval mode.
    """
    clock = clock or time.monotonic
    model.eval()
    model.hyperpriors.train()  # noisy z and its differentiable likelihood, as in training
    opt = torch.optim.Adam(hyperprior_parameters(model), lr=lr)
    start, step = clock(), 0
    for x in batches:
        frac = min(1.0, (clock() - start) / seconds) if seconds > 0 else 1.0
        rate = lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = rate
        index_bits, z_bits = rate_bits(model, x, *knobs(x.shape[0]))
        pixels = x.shape[0] * x.shape[2] * x.shape[3]
        opt.zero_grad(set_to_none=True)
        ((index_bits + z_bits) / pixels).float().backward()
        opt.step()
        step += 1
        if on_step is not None:
            on_step(step, rate, float(index_bits.detach()) / pixels, float(z_bits.detach()) / pixels)
        if frac >= 1.0:
            break
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    model.update()
    return step


#: Parameters of h_a whose first axis is the side latent's channels (its last convolution).
_Z_ROWS = ("h_a.net.4.weight", "h_a.net.4.bias")
#: Scale of h_a's fresh weights for new channels: their z starts near 0, so it costs few bits.
NEW_CHANNEL_SCALE = 0.1


def widen_side_latent(model: HVQCodec, z_channels: int) -> HVQCodec:
    """A copy of ``model`` whose side latents have ``z_channels`` channels (more than its own): the
    old channels keep their weights, ``h_s`` reads the new ones with zero weights (so mu and sigma
    are unchanged until a refit teaches it to use them), ``h_a`` gives them fresh weights scaled by
    ``NEW_CHANNEL_SCALE`` and their priors start as copies of the old channels' (channel ``i`` from
    ``i mod old``). Every other tensor is copied. Tables are updated."""
    old = model.cfg.z_channels
    if z_channels <= old:
        raise ValueError(f"z_channels {z_channels} must exceed the model's {old}")
    wide = HVQCodec(dataclasses.replace(model.cfg, z_channels=z_channels))
    state = wide.state_dict()
    for name, value in model.state_dict().items():
        target = state[name]
        if target.shape == value.shape:
            target.copy_(value)
        elif name.endswith("h_s.up1.weight"):  # (hidden, z, 3, 3): the new inputs read nothing
            target.zero_()
            target[:, :old].copy_(value)
        elif "prior." in name:  # a new channel starts with the density of old channel (i mod old)
            target.copy_(value[torch.arange(z_channels) % old])
        elif any(key in name for key in _Z_ROWS):  # h_a: the new channels start small, so cheap
            target[old:] *= NEW_CHANNEL_SCALE
            target[:old].copy_(value)
        elif name != "z_freqs":  # recomputed by update()
            raise ValueError(f"{name}: unexpected shape {tuple(value.shape)} -> {tuple(target.shape)}")
    wide.load_state_dict(state)
    wide.eval()
    wide.update()
    return wide
