"""Shipped models: ``load_pretrained("reduced")`` loads weights that live inside the package.

Files are ``hvq/pretrained/<name>.pt`` (a slim checkpoint: kind, format version, config, model state
dict with its integer entropy tables) next to ``<name>.json`` (how it was trained: config, steps,
wall time, data). They load with ``torch.load(weights_only=True)``; a file from another format version
or with weights that do not fit its config raises :class:`hvq.errors.CheckpointError`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hvq.checkpoint import model_from_checkpoint, save_checkpoint
from hvq.model import HVQCodec

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def available() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))


def load_pretrained(name: str = "reduced", device: str | torch.device = "cpu") -> HVQCodec:
    """Load a shipped model (eval mode, entropy tables filled) by name, or a checkpoint by path."""
    path = Path(name)
    if not path.suffix:
        path = PRETRAINED_DIR / f"{name}.pt"
        if not path.exists():
            raise FileNotFoundError(
                f"no shipped model named {name!r}; available: {available() or 'none yet'}"
            )
    model, _, _ = model_from_checkpoint(path, device)
    return model.channels_last() if torch.device(device).type == "cpu" else model


def model_card(name: str = "reduced") -> dict:
    """How the shipped model was trained (the JSON next to the weights)."""
    return json.loads((PRETRAINED_DIR / f"{name}.json").read_text())


def export_pretrained(checkpoint: str | Path, name: str, notes: dict | None = None) -> Path:
    """Slim a training checkpoint to model weights + integer tables, and write its card (JSON).

    The card records the config, the step, the training wall time, the data folders and their image
    counts, and the last logged losses (read from ``log.csv`` beside the checkpoint when present).
    """
    checkpoint = Path(checkpoint)
    model, cfg, state = model_from_checkpoint(checkpoint)
    model.update()
    out = PRETRAINED_DIR / f"{name}.pt"
    save_checkpoint(out, cfg, model, step=state.get("step"), wall_s=state.get("wall_s"))
    card = {
        "name": name,
        "format": "hvq-checkpoint (torch.load weights_only=True)",
        "config": cfg.to_dict(),
        "steps": state.get("step"),
        "train_wall_s": state.get("wall_s"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "file_bytes": out.stat().st_size,
        "model_tag": model.model_tag().hex(),
    }
    log = checkpoint.parent / "log.csv"
    if log.exists():
        import csv

        with open(log) as fh:
            rows = list(csv.DictReader(fh))
        if rows:
            card["last_log_row"] = rows[-1]
    card.update(notes or {})
    (PRETRAINED_DIR / f"{name}.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return out
