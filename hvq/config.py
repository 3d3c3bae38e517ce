"""Typed configuration: one YAML file = one :class:`Config` (model + training), stored in checkpoints."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    """Architecture. Widths are per encoder level; level ``i`` works at ``1/2**i`` of the image side.

    The fine, medium and coarse granularities tap levels 2, 3 and 4 (1/4, 1/8, 1/16), as in
    Control-GIC. ``widths`` must therefore have 5 entries.
    """

    codebook_size: int = 1024  # K (Control-GIC: 1024)
    embed_dim: int = 4  # D (Control-GIC: 4)
    widths: tuple[int, ...] = (16, 32, 64, 96, 128)
    res_blocks: tuple[int, ...] = (0, 1, 1, 1, 1)  # per encoder level (decoder mirrors levels 0..2)
    decoder_widths: tuple[int, ...] = (16, 32, 64)  # decoder at 1/1, 1/2, 1/4
    decoder_res_blocks: tuple[int, ...] = (0, 1, 2)
    granularity_width: int = 64  # per-granularity decoder branch width
    hyper_channels: int = 64
    z_channels: int = 8
    z_support: int = 24  # z coded over integers -S..S (values beyond are clamped)
    covariance: str = "diagonal"  # "diagonal" or "isotropic" (ablation)
    adaptive_decoder: bool = True  # condition the decoder on the entropy model's confidence
    shared_hyperprior: bool = False  # one hyperprior for all granularities (ablation)
    cond_dim: int = 64  # rate-knob embedding size (0 disables the lambda input)
    lambda_min: float = 1.0
    lambda_max: float = 64.0
    beta_commit: float = 0.25
    # Let the rate gradient move the shared codebook. Off by default: the rate can then fall by
    # spreading the codes apart relative to sigma (a scale degeneracy seen as diverging training).
    rate_grad_to_codebook: bool = False
    # Scale of the rate gradient that reaches the encoder through the straight-through features
    # (1.0: the full end-to-end rate; smaller keeps fine codes informative while the hyperprior
    # still learns to predict them). An experiment knob, see README "Our readings".
    encoder_rate_grad: float = 1.0

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        self.res_blocks = tuple(self.res_blocks)
        self.decoder_widths = tuple(self.decoder_widths)
        self.decoder_res_blocks = tuple(self.decoder_res_blocks)
        if len(self.widths) != 5 or len(self.res_blocks) != 5:
            raise ValueError("widths and res_blocks need 5 levels (1/1 .. 1/16)")
        if len(self.decoder_widths) != 3 or len(self.decoder_res_blocks) != 3:
            raise ValueError("decoder_widths and decoder_res_blocks need 3 levels (1/1, 1/2, 1/4)")
        if self.covariance not in ("diagonal", "isotropic"):
            raise ValueError("covariance must be 'diagonal' or 'isotropic'")
        if not 0 < self.lambda_min <= self.lambda_max:
            raise ValueError("need 0 < lambda_min <= lambda_max")
        limits = {"codebook_size": (2, 1 << 16), "embed_dim": (1, 64), "z_channels": (1, 256),
                  "z_support": (1, 1024), "hyper_channels": (1, 4096), "granularity_width": (1, 4096),
                  "cond_dim": (0, 4096)}  # fmt: skip
        for name, (lo, hi) in limits.items():
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name} must lie in [{lo}, {hi}], got {getattr(self, name)}")
        if not all(1 <= w <= 4096 for w in self.widths + self.decoder_widths):
            raise ValueError("widths must lie in [1, 4096]")


@dataclass
class TrainConfig:
    """Optimisation and data. Loss = bpp + lambda * (mse_weight*MSE + lpips_weight*LPIPS) + VQ + GAN."""

    data_dirs: tuple[str, ...] = ("train",)  # relative to the data directory, or absolute
    crop: int = 128
    batch_size: int = 8
    steps: int = 20000
    lr: float = 4e-4
    lr_min: float = 4e-5
    codebook_lr_mult: float = 10.0  # the codebook learns faster than the encoder moves (no EMA)
    prior_lr_mult: float = 10.0  # the factorised priors of z (density parameters) learn faster
    warmup_steps: int = 200
    mse_weight: float = 1.0
    # When > 0, the MSE weight scales as (lambda / sqrt(lambda_min lambda_max)) ** power: the top of the
    # lambda range leans to PSNR, the bottom to LPIPS, the middle keeps ``mse_weight``.
    mse_lambda_power: float = 0.0
    lpips_weight: float = 0.05
    # Colour fidelity (LPIPS barely sees global colour), part of the distortion that lambda weighs:
    # weight times the squared per-channel mean error plus the MSE of 16x16 block means.
    colour_weight: float = 0.0
    # When > 0, the learning-rate schedule runs on wall-clock time and training stops after this many
    # seconds (or at ``steps``, whichever comes first): "train for ten minutes on this GPU".
    time_budget_s: float = 0.0
    disc_start: int = 10**9  # step at which the adversarial term starts (VQGAN warm-up)
    disc_weight: float = 0.1
    disc_width: int = 32
    coarse_ratio: tuple[float, float] = (0.0, 0.9)  # sampled per batch
    medium_ratio: tuple[float, float] = (0.0, 0.9)  # of what is not coarse
    all_fine_share: float = 0.0  # share of images trained with both ratios 0 (every cell fine)
    lambda_max_share: float = 0.0  # share of images trained at lambda_max (the log-uniform draw's corner)
    roi_share: float = 0.0  # share of images with a random box (1/4 to 1/2 of each side) forced fine
    # Top-level modules of HVQCodec that learn (e.g. ["decoder", "embed_dec"]); empty: all of them.
    # Without the encoder and codebook the indices and bits stay fixed and no code is restarted.
    trainable: tuple[str, ...] = ()
    restart_every: int = 200  # dead-code restart interval (steps); 0 disables
    log_every: int = 20
    ckpt_every: int = 250
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast (CPU and CUDA) for the networks, fp32 for entropy terms
    num_workers: int = 0
    cache_images: bool = True


@dataclass
class Config:
    name: str = "reduced"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        unknown = set(d) - {"name", "model", "train"}
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        return cls(
            name=d.get("name", "custom"),
            model=_build(ModelConfig, d.get("model", {})),
            train=_build(TrainConfig, d.get("train", {})),
        )


def _build(kind, values: dict[str, Any]):
    if not isinstance(values, dict):
        raise ValueError(f"{kind.__name__} settings must be a mapping, got {type(values).__name__}")
    default = kind()
    defaults = {f.name: getattr(default, f.name) for f in dataclasses.fields(kind)}
    unknown = set(values) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} settings: {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    for name, value in values.items():
        _check_type(kind.__name__, name, value, defaults[name])
    return kind(**values)


def _check_type(section: str, name: str, value: Any, default: Any) -> None:
    """A setting must have its default's type (an int where a float is expected is fine)."""
    expected = type(default)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is tuple and ok:
        ok = all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ValueError(f"{section}.{name} must be {expected.__name__}, got {value!r}")


def load_config(path_or_name: str | Path) -> Config:
    """Load a packaged config by name (``hvq/configs/<name>.yaml``), or any YAML path."""
    p = Path(path_or_name)
    if not p.suffix:
        p = Path(__file__).resolve().parent / "configs" / f"{path_or_name}.yaml"
    if not p.exists():
        raise FileNotFoundError(f"config not found: {p}")
    with open(p) as f:
        return Config.from_dict(yaml.safe_load(f) or {})
