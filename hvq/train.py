"""Training: rate + lambda * (distortion + perception) + VQ + adversarial, resumable, DDP-ready.

One step, per batch of crops ``x (B, 3, c, c)``:

* sample the rate knob per image: ``lambda ~ logUniform[lambda_min, lambda_max]`` and the granularity
  ratios ``coarse ~ U(coarse_ratio)``, ``medium ~ U(medium_ratio)`` (so one model serves every rate);
* ``loss = mean_b[ bpp_b + lambda_b * (mse_weight * MSE_b + lpips_weight * LPIPS_b) ]
  + codebook + beta * commit + w_adv * GAN`` where ``bpp`` counts index, z and mask bits, and
  ``w_adv = disc_weight * ||grad rec|| / ||grad GAN||`` (VQGAN's adaptive weight) once
  ``step >= disc_start``; the PatchGAN discriminator trains with the hinge loss.

Checkpoints (``run_dir/checkpoint.pt``) hold the config, the step, model/discriminator/optimiser
states and the RNG state, written atomically every ``ckpt_every`` steps: a killed run resumes from
the last one (``hvq train`` resumes automatically). Under ``torchrun`` it uses DistributedDataParallel
(NCCL on CUDA, gloo on CPU) with rank-0 logging and checkpoints.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from hvq.checkpoint import load_checkpoint, save_checkpoint
from hvq.config import Config
from hvq.data import ImageFolderCrops, default_data_dir
from hvq.errors import CheckpointError
from hvq.model import HVQCodec
from hvq.nets import PatchDiscriminator
from hvq.nets.discriminator import adaptive_weight, hinge_d_loss
from hvq.perceptual import LPIPS

LOG_FIELDS = (
    "step", "wall_s", "img_per_s", "lr", "loss", "bpp", "bpp_index", "bpp_z", "bpp_mask", "mse", "psnr",
    "lpips", "codebook", "commit", "gan_g", "gan_w", "gan_d", "perplexity", "restarted", "skipped",
)  # fmt: skip


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 autocast is
    emulated and many times slower than float32, so training stays in float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def sample_knobs(cfg: Config, b: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image ``(lambda, coarse_ratio, medium_ratio)``, each ``(B,)``."""
    m, t = cfg.model, cfg.train
    u = torch.rand(3, b, generator=gen)
    lam = torch.exp(math.log(m.lambda_min) + u[0] * (math.log(m.lambda_max) - math.log(m.lambda_min)))
    rc = t.coarse_ratio[0] + u[1] * (t.coarse_ratio[1] - t.coarse_ratio[0])
    rm = t.medium_ratio[0] + u[2] * (t.medium_ratio[1] - t.medium_ratio[0])
    return lam, rc, rm


def lr_at(cfg: Config, step: int, time_frac: float | None = None) -> float:
    """Linear warm-up, then cosine decay to ``lr_min`` over the steps, or over the wall-clock budget
    when ``time_frac`` (elapsed / ``time_budget_s``) is given."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    frac = min(1.0, (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps))
    if time_frac is not None:
        frac = min(1.0, max(0.0, time_frac))
    return t.lr_min + 0.5 * (t.lr - t.lr_min) * (1 + math.cos(math.pi * frac))


def colour_loss(x_hat: Tensor, x: Tensor, block: int = 16) -> Tensor:
    """Per-image colour error ``(B,)``: squared per-channel mean error plus the MSE of ``block`` x
    ``block`` means. Zero when the reconstruction keeps every block's average colour."""
    diff = x_hat - x
    global_bias = diff.mean((2, 3)).pow(2).mean(1)
    if min(diff.shape[-2:]) >= block:
        diff = F.avg_pool2d(diff, block)
    return global_bias + diff.pow(2).flatten(1).mean(1)


def _resolve_dirs(cfg: Config, data_dir: Path) -> list[Path]:
    return [Path(d) if Path(d).is_absolute() else data_dir / d for d in cfg.train.data_dirs]


def train(
    cfg: Config,
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    steps: int | None = None,
    device: str | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
    init_from: str | Path | None = None,
) -> Path:
    """Train (or resume) ``cfg`` into ``run_dir``; returns the checkpoint path.

    ``steps`` overrides ``cfg.train.steps`` (the total, not additional steps). ``callback`` receives
    every logged row (a dict), e.g. for a live plot in a notebook. ``init_from``: a checkpoint (e.g.
    the shipped ``hvq/pretrained/reduced.pt``) whose weights start a *new* run (see
    :func:`init_weights_from`); ignored when ``run_dir`` already holds a checkpoint to resume.
    """
    tc = cfg.train
    total_steps = steps if steps is not None else tc.steps
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    dev = pick_device(device or tc.device)
    rank, world = 0, 1
    if distributed:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(dev)
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json())

    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(tc.seed + rank)
    gen = torch.Generator().manual_seed(tc.seed + 1000 * rank)
    model = HVQCodec(cfg.model).to(dev)
    disc = PatchDiscriminator(tc.disc_width).to(dev)
    perceptual = LPIPS().to(dev)
    opt = torch.optim.Adam(_param_groups(model, tc), lr=tc.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=tc.lr, betas=(0.5, 0.9))
    step, wall = 0, 0.0
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, expect_config=cfg)
        missing = {"disc", "opt", "opt_d", "step", "wall_s", "rng"} - set(state)
        if missing:
            raise CheckpointError(
                f"{ckpt_path} holds model weights only (no {', '.join(sorted(missing))}), so it cannot "
                "be resumed; start a new run from it with --init-from"
            )
        model.load_state_dict(state["model"])
        disc.load_state_dict(state["disc"])
        opt.load_state_dict(state["opt"])
        opt_d.load_state_dict(state["opt_d"])
        step, wall = state["step"], state["wall_s"]
        gen.set_state(state["rng"])
        if rank:  # the checkpoint holds rank 0's generator: the other ranks draw their own knobs again
            gen.manual_seed(tc.seed + 1000 * rank + step)
        if rank == 0:
            print(f"resumed from {ckpt_path} at step {step}")
    elif init_from is not None:
        loaded, skipped = init_weights_from(model, init_from)
        if rank == 0:
            print(f"initialised {loaded} tensors from {init_from}; new or reshaped: {skipped or 'none'}")
    net, disc_net = model, disc
    if distributed:
        ids = [dev.index] if dev.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        # The discriminator trains too: DDP makes its start identical on every rank (rank 0's weights)
        # and averages its gradients in the D step, so it stays identical.
        disc_net = torch.nn.parallel.DistributedDataParallel(disc, device_ids=ids)

    data_root = Path(data_dir) if data_dir else default_data_dir()
    dataset = ImageFolderCrops(
        _resolve_dirs(cfg, data_root), crop=tc.crop, epoch_size=10**6, cache=tc.cache_images
    )
    sampler = DistributedSampler(dataset, world, rank, seed=tc.seed + step) if distributed else None
    loader = DataLoader(
        dataset, batch_size=tc.batch_size, shuffle=sampler is None, sampler=sampler,
        num_workers=tc.num_workers, drop_last=True, generator=None if sampler else gen,
    )  # fmt: skip
    amp = tc.amp and (dev.type == "cuda" or (dev.type == "cpu" and cpu_has_fast_bf16()))
    log_file = run_dir / "log.csv"
    new_log = rank == 0 and not log_file.exists()
    log_fh = open(log_file, "a", newline="") if rank == 0 else None
    writer = csv.DictWriter(log_fh, LOG_FIELDS) if log_fh else None
    if new_log:
        writer.writeheader()
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True)
    model.train()
    t_last, n_img, skipped = time.time(), 0, 0
    it = iter(loader)
    try:
        while step < total_steps:
            try:
                x = next(it)
            except StopIteration:
                it = iter(loader)
                x = next(it)
            x = x.to(dev, non_blocking=True)
            lam, rc, rm = (v.to(dev) for v in sample_knobs(cfg, x.shape[0], gen))
            if distributed and not bool(model.quantizer.initialised):
                with torch.no_grad():  # initialise the codebook from data, identically on every rank
                    model(x, lam, rc, rm)
                dist.broadcast(model.quantizer.codebook.data, src=0)
            time_frac = (wall + time.time() - t_last) / tc.time_budget_s if tc.time_budget_s else None
            for group in opt.param_groups + opt_d.param_groups:
                group["lr"] = lr_at(cfg, step, time_frac) * group.get("lr_mult", 1.0)
            use_gan = step >= tc.disc_start and tc.disc_weight > 0
            terms = _generator_loss(net, model, disc, perceptual, x, (lam, rc, rm), cfg, amp, use_gan)
            out, x_hat, loss = terms["out"], terms["x_hat"], terms["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            finite = bool(torch.isfinite(grad_norm))
            if finite:
                opt.step()
            else:  # no update from a bad batch; the step still counts, is logged and checkpointed
                skipped += 1
                if skipped > 50:
                    raise FloatingPointError(f"more than 50 non-finite steps (last at step {step})")
            gan_d = torch.zeros((), device=dev)
            if use_gan and finite:
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                    gan_d = hinge_d_loss(disc_net(x).float(), disc_net(x_hat.detach()).float())
                opt_d.zero_grad(set_to_none=True)
                gan_d.backward()
                opt_d.step()
            with torch.no_grad():
                _update_static(model, out)
            restarted = 0
            if tc.restart_every and (step + 1) % tc.restart_every == 0:
                restarted = _restart_codes(model, out, distributed)
            step += 1
            n_img += x.shape[0] * world
            if bar:
                bar.update(1)
                bpp, lp = out["bpp"].mean().item(), terms["lpips"].mean().item()
                bar.set_postfix(bpp=f"{bpp:.3f}", lpips=f"{lp:.3f}")
            finished = step == total_steps or _out_of_time(tc, wall + time.time() - t_last, distributed, dev)
            if rank == 0 and (step % tc.log_every == 0 or finished):
                now = time.time()
                wall += now - t_last
                row = _log_row(model, terms, gan_d, step=step, wall=wall, lr=opt.param_groups[-1]["lr"],
                               img_per_s=n_img / max(1e-9, now - t_last), restarted=restarted,
                               skipped=skipped)  # fmt: skip
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
                log_fh.flush()
                t_last, n_img = now, 0
                if callback:
                    callback(row)
            if rank == 0 and (step % tc.ckpt_every == 0 or finished):
                model.update()
                save_checkpoint(ckpt_path, cfg, model, step=step, wall_s=wall, disc=disc, opt=opt,
                                opt_d=opt_d, rng=gen.get_state())  # fmt: skip
            if finished:
                break
    finally:
        if bar:
            bar.close()
        if log_fh:
            log_fh.close()
        if distributed:
            dist.destroy_process_group()
    return ckpt_path


def _generator_loss(net, model, disc, perceptual, x: Tensor, knobs, cfg: Config, amp: bool, use_gan: bool):
    """The model's loss on one batch: ``{"loss", "out", "x_hat", "mse", "lpips", "gan_g", "gan_w"}``.

    ``bpp + lambda * (mse_weight MSE + lpips_weight LPIPS + colour_weight colour)`` averaged over the
    batch, plus the VQ terms and, with ``use_gan``, the adaptively weighted adversarial term.
    """
    tc, dev = cfg.train, x.device
    lam, rc, rm = knobs
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
        out = net(x, lam, rc, rm)
        x_hat = out["x_hat"].float()
        mse = (x_hat - x).pow(2).flatten(1).mean(1)
        lp = perceptual(x_hat, x).float()
    dist_term = tc.mse_weight * mse + tc.lpips_weight * lp
    if tc.colour_weight:
        dist_term = dist_term + tc.colour_weight * colour_loss(x_hat, x)
    loss = (out["bpp"] + lam * dist_term).mean()
    loss = loss + out["codebook_loss"] + cfg.model.beta_commit * out["commit_loss"]
    gan_g = gan_w = torch.zeros((), device=dev)
    if use_gan:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            gan_g = -disc(x_hat).float().mean()
        gan_w = tc.disc_weight * adaptive_weight((lam * dist_term).mean(), gan_g, model.decoder.last_layer)
        loss = loss + gan_w * gan_g
    return {"loss": loss, "out": out, "x_hat": x_hat, "mse": mse, "lpips": lp, "gan_g": gan_g, "gan_w": gan_w}


def _log_row(model: HVQCodec, terms: dict, gan_d: Tensor, **fields) -> dict:
    """One row of ``log.csv`` (:data:`LOG_FIELDS`) from the step's loss terms and counters."""
    out, mse = terms["out"], terms["mse"]
    row = {
        "step": fields["step"],
        "wall_s": round(fields["wall"], 1),
        "img_per_s": round(fields["img_per_s"], 2),
        "lr": fields["lr"],
        "loss": terms["loss"].item(),
        "mse": mse.mean().item(),
        "psnr": (-10 * torch.log10(mse.clamp_min(1e-10))).mean().item(),
        "lpips": terms["lpips"].mean().item(),
        "codebook": out["codebook_loss"].item(),
        "commit": out["commit_loss"].item(),
        "gan_g": terms["gan_g"].item(),
        "gan_w": float(terms["gan_w"]),
        "gan_d": gan_d.item(),
        "perplexity": model.quantizer.perplexity(torch.cat([i.flatten() for i in out["indices"]])),
        "restarted": fields["restarted"],
        "skipped": fields["skipped"],
    }
    row.update({k: out[k].mean().item() for k in ("bpp", "bpp_index", "bpp_z", "bpp_mask")})
    return row


def _out_of_time(tc, elapsed: float, distributed: bool, dev: torch.device) -> bool:
    """True once the wall-clock budget is spent (rank 0 decides, so every rank stops together)."""
    if not tc.time_budget_s:
        return False
    flag = torch.tensor([float(elapsed >= tc.time_budget_s)], device=dev)
    if distributed:
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def init_weights_from(model: HVQCodec, path: str | Path) -> tuple[int, list[str]]:
    """Copy every tensor of a checkpoint's model whose name and shape match ``model``'s (fine-tunes,
    ablations that change a few layers, longer training from a shipped model).

    Returns ``(number of tensors copied, names left as initialised)``.
    """
    source = load_checkpoint(path)["model"]
    own = model.state_dict()
    matching = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    return len(matching), sorted(set(own) - set(matching))


def _param_groups(model: HVQCodec, tc) -> list[dict]:
    """Three groups: the codebook and the z priors learn ``*_lr_mult`` times faster than the rest."""
    groups: dict[str, list] = {"codebook": [], "prior": [], "rest": []}
    for name, p in model.named_parameters():
        key = "codebook" if name == "quantizer.codebook" else "prior" if ".prior." in name else "rest"
        groups[key].append(p)
    mult = {"codebook": tc.codebook_lr_mult, "prior": tc.prior_lr_mult, "rest": 1.0}
    return [{"params": v, "lr_mult": mult[k]} for k, v in groups.items() if v]


def _update_static(model: HVQCodec, out: dict) -> None:
    """Exponential moving histogram of the coded indices (the static-histogram baseline)."""
    counts = model.static.counts
    counts.mul_(0.995)
    for idx, m in zip(out["indices"], out["masks"], strict=True):
        model.static.update(idx[m[:, 0] > 0])


def _restart_codes(model: HVQCodec, out: dict, distributed: bool) -> int:
    feats = torch.cat(
        [
            y.detach().float().permute(0, 2, 3, 1)[m[:, 0] > 0]
            for y, m in zip(out["features"], out["masks"], strict=True)
        ]
    )
    n = model.quantizer.restart_dead_codes_(feats)
    if distributed:  # keep every rank's codebook identical: rank 0's wins
        dist.broadcast(model.quantizer.codebook.data, src=0)
    return n
