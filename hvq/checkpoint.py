"""Checkpoints: config + format version + states, written atomically, read with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hvq.config import Config
from hvq.errors import CheckpointError
from hvq.files import atomic_write

#: Bump when the checkpoint layout or the model's state-dict names change incompatibly.
CHECKPOINT_VERSION = 1
KIND = "hvq-checkpoint"


def save_checkpoint(path: str | Path, cfg: Config, model: nn.Module, **extra: Any) -> None:
    """Save ``{"kind", "version", "config", "model", **extra}`` atomically.

    ``extra`` may hold optimiser states, the step, ``wall_s``, ``disc`` (a module), ``rng`` state.
    """
    state: dict[str, Any] = {"kind": KIND, "version": CHECKPOINT_VERSION, "config": cfg.to_dict(),
                             "model": model.state_dict()}  # fmt: skip
    for k, v in extra.items():
        state[k] = v.state_dict() if hasattr(v, "state_dict") else v
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, expect_config: Config | None = None) -> dict[str, Any]:
    """Load safely (``weights_only=True``) and validate kind, version and (optionally) the config.

    Raises:
        CheckpointError: unreadable, corrupt, foreign, another version, or another model config.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable hvq checkpoint ({_reason(exc)})") from exc
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CheckpointError(f"{path}: not an hvq checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {state.get('version')}, this hvq reads {CHECKPOINT_VERSION}"
        )
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: hvq checkpoint without its 'config' and 'model' entries")
    if expect_config is not None and _model_section(state) != expect_config.to_dict()["model"]:
        raise CheckpointError(f"{path}: checkpoint was trained with another model config")
    return state


def _reason(exc: Exception) -> str:
    """A one-line reason for a failed load, never torch's advice to load unsafely."""
    text = str(exc)
    if "weights_only" in text or "Unsupported global" in text:
        return "it holds Python objects besides tensors, which hvq never unpickles"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


def _model_section(state: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's model config with today's defaults filled in (settings added since it was
    written keep their default, so older runs still resume)."""
    try:
        return Config.from_dict(state["config"]).to_dict()["model"]
    except (KeyError, TypeError, ValueError):
        return None


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """``(HVQCodec in eval mode, Config, state)`` from a checkpoint; strict state-dict loading."""
    from hvq.model import HVQCodec

    state = load_checkpoint(path)
    try:
        cfg = Config.from_dict(state["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid config in checkpoint: {exc}") from exc
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # the weights are float32 whatever the caller's default
    try:
        model = HVQCodec(cfg.model)
    finally:
        torch.set_default_dtype(previous)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model config: {exc}") from exc
    return model.to(device).eval(), cfg, state
