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
from collections.abc import Callable, Iterator
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
    if t.all_fine_share > 0:  # drawn only then, so that other configs keep their knob sequence
        all_fine = torch.rand(b, generator=gen) < t.all_fine_share
        rc, rm = rc.masked_fill(all_fine, 0.0), rm.masked_fill(all_fine, 0.0)
    if t.lambda_max_share > 0:  # likewise drawn only then
        lam = lam.masked_fill(torch.rand(b, generator=gen) < t.lambda_max_share, m.lambda_max)
    return lam, rc, rm


def sample_roi(cfg: Config, b: int, h: int, w: int, gen: torch.Generator) -> Tensor | None:
    """Regions of interest ``(B, 1, H, W)`` 0/1 for a batch: a random box, each side 1/4 to 1/2 of
    the crop's, in ``cfg.train.roi_share`` of the images, nothing in the rest; ``None`` when the share
    is 0 (no draw, so such configs keep their random sequence)."""
    share = cfg.train.roi_share
    if share <= 0:
        return None
    u = torch.rand(5, b, generator=gen)
    roi = torch.zeros(b, 1, h, w)
    for i in torch.nonzero(u[0] < share).flatten().tolist():
        bh, bw = int(h * (0.25 + 0.25 * u[1, i])), int(w * (0.25 + 0.25 * u[2, i]))
        y0, x0 = int((h - bh) * u[3, i]), int((w - bw) * u[4, i])
        roi[i, 0, y0 : y0 + bh, x0 : x0 + bw] = 1
    return roi


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
    trainer = Trainer(cfg, run_dir, device, init_from)
    total_steps = steps if steps is not None else cfg.train.steps
    batches = trainer.batches(Path(data_dir) if data_dir else default_data_dir())
    log = trainer.open_log(callback, total_steps if progress else None)
    try:
        while trainer.step < total_steps:
            x = next(batches)
            knobs = trainer.knobs(x)
            trainer.set_learning_rate()
            terms = trainer.generator_step(x, knobs)
            terms["gan_d"] = trainer.discriminator_step(x, terms)
            restarted = trainer.codebook_upkeep(terms["out"])
            trainer.step += 1
            finished = trainer.step == total_steps or trainer.out_of_time()
            log.record(trainer, terms, x.shape[0] * trainer.world, restarted, finished)
            trainer.checkpoint(finished)
            if finished:
                break
    finally:
        log.close()
        trainer.close()
    return trainer.ckpt_path


class Trainer:
    """The state of one run (model, discriminator, optimisers, step, clock, knob generator) and the
    named parts of a step; :func:`train` is the loop over them."""

    def __init__(self, cfg: Config, run_dir: str | Path, device: str | None, init_from) -> None:
        tc = cfg.train
        self.cfg, self.tc = cfg, tc
        self.dev = pick_device(device or tc.device)
        self.rank, self.world, self.distributed = self._join_process_group()
        self.run_dir = Path(run_dir)
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(cfg.to_json())
        if self.dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(tc.seed + self.rank)
        self.gen = torch.Generator().manual_seed(tc.seed + 1000 * self.rank)
        self.model = HVQCodec(cfg.model).to(self.dev)
        _freeze_all_but(self.model, tc.trainable)
        self.disc = PatchDiscriminator(tc.disc_width).to(self.dev)
        self.perceptual = LPIPS().to(self.dev)
        self.opt = torch.optim.Adam(_param_groups(self.model, tc), lr=tc.lr, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=tc.lr, betas=(0.5, 0.9))
        self.step, self.wall, self.skipped = 0, 0.0, 0
        self._restore(init_from)
        self.net, self.disc_net = self._wrap_distributed()
        self.amp = tc.amp and (self.dev.type == "cuda" or (self.dev.type == "cpu" and cpu_has_fast_bf16()))
        self.t_last = time.time()

    def _join_process_group(self) -> tuple[int, int, bool]:
        """``(rank, world size, distributed)``; under ``torchrun`` joins the process group."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1, False
        dist.init_process_group("nccl" if self.dev.type == "cuda" else "gloo")
        if self.dev.type == "cuda":
            self.dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.dev)
        return dist.get_rank(), dist.get_world_size(), True

    def _restore(self, init_from) -> None:
        """Resume from ``run_dir``'s checkpoint, or start from ``init_from``'s weights."""
        if self.ckpt_path.exists():
            state = load_checkpoint(self.ckpt_path, expect_config=self.cfg)
            missing = {"disc", "opt", "opt_d", "step", "wall_s", "rng"} - set(state)
            if missing:
                raise CheckpointError(
                    f"{self.ckpt_path} holds model weights only (no {', '.join(sorted(missing))}), so it "
                    "cannot be resumed; start a new run from it with --init-from"
                )
            self.model.load_state_dict(state["model"])
            self.disc.load_state_dict(state["disc"])
            self.opt.load_state_dict(state["opt"])
            self.opt_d.load_state_dict(state["opt_d"])
            self.step, self.wall = state["step"], state["wall_s"]
            self.gen.set_state(state["rng"])
            if self.rank:  # the checkpoint holds rank 0's generator: the others draw their own knobs
                self.gen.manual_seed(self.tc.seed + 1000 * self.rank + self.step)
            if self.rank == 0:
                print(f"resumed from {self.ckpt_path} at step {self.step}")
        elif init_from is not None:
            loaded, skipped = init_weights_from(self.model, init_from)
            if self.rank == 0:
                print(f"initialised {loaded} tensors from {init_from}; new or reshaped: {skipped or 'none'}")

    def _wrap_distributed(self):
        """The modules the step runs: DDP wrappers when distributed (the discriminator too, so that
        its start is rank 0's and its gradients are averaged), else the modules themselves."""
        if not self.distributed:
            return self.model, self.disc
        ids = [self.dev.index] if self.dev.type == "cuda" else None
        ddp = torch.nn.parallel.DistributedDataParallel
        return ddp(self.model, device_ids=ids), ddp(self.disc, device_ids=ids)

    # ----------------------------------------------------------------------- the named steps
    def batches(self, data_root: Path) -> Iterator[Tensor]:
        """Endless batches of random crops ``(B, 3, crop, crop)`` on the device. The training clock
        starts when the data are loaded."""
        tc = self.tc
        dataset = ImageFolderCrops(
            _resolve_dirs(self.cfg, data_root), crop=tc.crop, epoch_size=10**6, cache=tc.cache_images
        )
        sampler = None
        if self.distributed:
            sampler = DistributedSampler(dataset, self.world, self.rank, seed=tc.seed + self.step)
        loader = DataLoader(
            dataset, batch_size=tc.batch_size, shuffle=sampler is None, sampler=sampler,
            num_workers=tc.num_workers, drop_last=True, generator=None if sampler else self.gen,
        )  # fmt: skip
        self.model.train()
        self.t_last = time.time()
        return self._endless(loader)

    def _endless(self, loader: DataLoader) -> Iterator[Tensor]:
        while True:
            for x in loader:
                yield x.to(self.dev, non_blocking=True)

    def knobs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Per-image ``(lambda, coarse_ratio, medium_ratio)`` on the device (:func:`sample_knobs`)
        and the regions of interest (:func:`sample_roi`); a distributed run first initialises the
        codebook from data, identically on every rank."""
        lam, rc, rm = (v.to(self.dev) for v in sample_knobs(self.cfg, x.shape[0], self.gen))
        roi = sample_roi(self.cfg, x.shape[0], x.shape[2], x.shape[3], self.gen)
        roi = roi.to(self.dev) if roi is not None else None
        if self.distributed and not bool(self.model.quantizer.initialised):
            with torch.no_grad():
                self.model(x, lam, rc, rm)
            dist.broadcast(self.model.quantizer.codebook.data, src=0)
        return lam, rc, rm, roi

    def elapsed(self) -> float:
        """Training seconds so far, this process's unlogged time included."""
        return self.wall + time.time() - self.t_last

    def set_learning_rate(self) -> None:
        """The schedule (:func:`lr_at`) on steps, or on wall time when ``time_budget_s`` is set."""
        tc = self.tc
        time_frac = self.elapsed() / tc.time_budget_s if tc.time_budget_s else None
        for group in self.opt.param_groups + self.opt_d.param_groups:
            group["lr"] = lr_at(self.cfg, self.step, time_frac) * group.get("lr_mult", 1.0)

    def generator_step(self, x: Tensor, knobs) -> dict:
        """Loss, backward, clipped optimiser step. A non-finite gradient makes no update; it is
        counted (``skipped``, logged), and more than 50 stop the run. Returns the loss terms plus
        ``"finite"``."""
        use_gan = self.step >= self.tc.disc_start and self.tc.disc_weight > 0
        terms = _generator_loss(self.net, self.model, self.disc, self.perceptual, x, knobs, self.cfg,
                                self.amp, use_gan)  # fmt: skip
        self.opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        terms["finite"] = bool(torch.isfinite(grad_norm))
        if terms["finite"]:
            self.opt.step()
        else:
            self.skipped += 1
            if self.skipped > 50:
                raise FloatingPointError(f"more than 50 non-finite steps (last at step {self.step})")
        terms["use_gan"] = use_gan
        return terms

    def discriminator_step(self, x: Tensor, terms: dict) -> Tensor:
        """Hinge-loss step of the discriminator (only once the adversarial term is on and the
        generator's step was finite); returns its loss (0 otherwise)."""
        if not (terms["use_gan"] and terms["finite"]):
            return torch.zeros((), device=self.dev)
        with torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16, enabled=self.amp):
            gan_d = hinge_d_loss(self.disc_net(x).float(), self.disc_net(terms["x_hat"].detach()).float())
        self.opt_d.zero_grad(set_to_none=True)
        gan_d.backward()
        self.opt_d.step()
        return gan_d

    def codebook_upkeep(self, out: dict) -> int:
        """The static histogram's moving counts, and every ``restart_every`` steps the restart of dead
        codes; returns the number of codes restarted."""
        with torch.no_grad():
            _update_static(self.model, out)
        learns_codes = self.model.quantizer.codebook.requires_grad
        if learns_codes and self.tc.restart_every and (self.step + 1) % self.tc.restart_every == 0:
            return _restart_codes(self.model, out, self.distributed)
        return 0

    def out_of_time(self) -> bool:
        """True once the wall-clock budget is spent (rank 0 decides, so every rank stops together)."""
        if not self.tc.time_budget_s:
            return False
        flag = torch.tensor([float(self.elapsed() >= self.tc.time_budget_s)], device=self.dev)
        if self.distributed:
            dist.broadcast(flag, src=0)
        return bool(flag.item())

    def checkpoint(self, finished: bool) -> None:
        """Every ``ckpt_every`` steps and at the end (rank 0): update the tables, save atomically."""
        if self.rank == 0 and (self.step % self.tc.ckpt_every == 0 or finished):
            self.model.update()
            save_checkpoint(
                self.ckpt_path, self.cfg, self.model, step=self.step, wall_s=self.wall, disc=self.disc,
                opt=self.opt, opt_d=self.opt_d, rng=self.gen.get_state(),
            )  # fmt: skip

    def open_log(self, callback: Callable[[dict], None] | None, bar_total: int | None) -> TrainLog:
        """The run's ``log.csv`` (appended to when resuming) and progress bar, on rank 0."""
        return TrainLog(self.run_dir / "log.csv", callback, bar_total, self.step, enabled=self.rank == 0)

    def close(self) -> None:
        if self.distributed:
            dist.destroy_process_group()


class TrainLog:
    """``log.csv`` rows every ``log_every`` steps (and at the end), the progress bar, the callback."""

    def __init__(self, path: Path, callback, bar_total: int | None, step: int, enabled: bool) -> None:
        self.enabled, self.callback, self.n_img = enabled, callback, 0
        self.fh = self.writer = self.bar = None
        if not enabled:
            return
        new = not path.exists()
        self.fh = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, LOG_FIELDS)
        if new:
            self.writer.writeheader()
        if bar_total is not None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=bar_total, initial=step, desc="train", dynamic_ncols=True)

    def record(self, trainer: Trainer, terms: dict, n_img: int, restarted: int, finished: bool) -> None:
        """Count the step; on a logging step, close the clock interval and write one row."""
        self.n_img += n_img
        if not self.enabled:
            return
        if self.bar:
            self.bar.update(1)
            bpp, lp = terms["out"]["bpp"].mean().item(), terms["lpips"].mean().item()
            self.bar.set_postfix(bpp=f"{bpp:.3f}", lpips=f"{lp:.3f}")
        if trainer.step % trainer.tc.log_every and not finished:
            return
        now = time.time()
        trainer.wall += now - trainer.t_last
        img_per_s = self.n_img / max(1e-9, now - trainer.t_last)
        row = _log_row(trainer.model, terms, terms["gan_d"], step=trainer.step, wall=trainer.wall,
                       lr=trainer.opt.param_groups[-1]["lr"], img_per_s=img_per_s, restarted=restarted,
                       skipped=trainer.skipped)  # fmt: skip
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.fh.flush()
        trainer.t_last, self.n_img = now, 0
        if self.callback:
            self.callback(row)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        if self.fh:
            self.fh.close()


def mse_weights(cfg: Config, lam: Tensor) -> Tensor:
    """Per-image MSE weight ``(B,)``: ``mse_weight * (lam / lam_mid) ** mse_lambda_power``.

    ``lam_mid`` is the geometric middle of the trained lambda range, where the weight is ``mse_weight``.
    """
    tc, m = cfg.train, cfg.model
    lam_mid = math.sqrt(m.lambda_min * m.lambda_max)
    return tc.mse_weight * (lam / lam_mid).pow(tc.mse_lambda_power)


def _generator_loss(net, model, disc, perceptual, x: Tensor, knobs, cfg: Config, amp: bool, use_gan: bool):
    """The model's loss on one batch: ``{"loss", "out", "x_hat", "mse", "lpips", "gan_g", "gan_w"}``.

    ``bpp + lambda * (mse_weight MSE + lpips_weight LPIPS + colour_weight colour)`` averaged over the
    batch, plus the VQ terms and, with ``use_gan``, the adaptively weighted adversarial term.
    """
    tc, dev = cfg.train, x.device
    lam, rc, rm, roi = knobs
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
        out = net(x, lam, rc, rm, roi)
        x_hat = out["x_hat"].float()
        mse = (x_hat - x).pow(2).flatten(1).mean(1)
        lp = perceptual(x_hat, x).float()
    dist_term = mse_weights(cfg, lam) * mse + tc.lpips_weight * lp
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


def _freeze_all_but(model: HVQCodec, trainable: tuple[str, ...]) -> None:
    """Let only the named top-level modules learn (all of them when ``trainable`` is empty)."""
    children = dict(model.named_children())
    unknown = set(trainable) - set(children)
    if unknown:
        raise ValueError(f"train.trainable names no module of the model: {sorted(unknown)}")
    for name, child in children.items():
        child.requires_grad_(not trainable or name in trainable)


def _param_groups(model: HVQCodec, tc) -> list[dict]:
    """Three groups: the codebook and the z priors learn ``*_lr_mult`` times faster than the rest
    (frozen parameters are left out)."""
    groups: dict[str, list] = {"codebook": [], "prior": [], "rest": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
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
