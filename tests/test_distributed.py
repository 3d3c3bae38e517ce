"""DistributedDataParallel training on CPU: two gloo processes, identical weights, rank-0 files, resume.

Two processes are started with :func:`torch.multiprocessing.spawn`; each sets the variables ``torchrun``
would set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and calls
:func:`hvq.train.train` on the ``smoke`` model, trained on a few generated images with the adversarial
term on from step 0 and a dead-code restart at step 2 (so every cross-rank path runs: the codebook
initialisation broadcast, the gradient all-reduce, the discriminator, the restart broadcast).

``train`` keeps its modules to itself, so each worker swaps ``hvq.train.HVQCodec`` and
``hvq.train.PatchDiscriminator`` for subclasses that remember their instances (in the worker process
only), and writes every rank's final states to a file the test compares.
"""

from __future__ import annotations

import contextlib
import csv
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from PIL import Image

from hvq.checkpoint import load_checkpoint
from hvq.config import load_config

WORLD = 2
#: Settings laid over the smoke config: 2 steps, a checkpoint at every step, the GAN from step 0.
OVERRIDES: dict[str, Any] = {
    "steps": 2,
    "ckpt_every": 1,
    "log_every": 1,
    "disc_start": 0,
    "restart_every": 2,
    "num_workers": 0,
    "amp": False,
    "batch_size": 2,
    "warmup_steps": 1,
}

pytestmark = [
    pytest.mark.slow,  # two spawns of two processes: ~30 s on 2 busy cores, mostly process start-up
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing"),
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_images(folder: Path, n: int = 4, size: tuple[int, int] = (72, 88)) -> None:
    """``n`` smooth-plus-texture RGB PNGs of ``size`` (h, w) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    for i in range(n):
        base = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * rng.uniform(0.3, 1.0, size=3)
        img = 0.8 * base + 0.2 * rng.random((h, w, 3))
        Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"img{i}.png")


def write_config(path: Path, data_dir: Path, **overrides: Any) -> Path:
    """The smoke config with :data:`OVERRIDES` (and ``overrides``) as a YAML file at ``path``."""
    cfg = load_config("smoke").to_dict()
    cfg["train"].update(OVERRIDES, data_dirs=[str(data_dir)], **overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _worker(rank: int, world: int, port: int, config: str, run_dir: str, out_dir: str) -> None:
    """One rank: train like ``torchrun`` would run it, then save this rank's final states."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    import hvq.train
    from hvq.config import load_config

    made: dict[str, torch.nn.Module] = {}

    class RecordingCodec(hvq.train.HVQCodec):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made["model"] = self

    class RecordingDisc(hvq.train.PatchDiscriminator):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made["disc"] = self

    knobs: list[torch.Tensor] = []
    sample_knobs = hvq.train.sample_knobs

    def recording_knobs(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = sample_knobs(*args, **kwargs)
        knobs.append(torch.stack(out))
        return out

    hvq.train.HVQCodec = RecordingCodec
    hvq.train.PatchDiscriminator = RecordingDisc
    hvq.train.sample_knobs = recording_knobs
    with open(Path(out_dir) / f"rank{rank}.out", "w") as fh, contextlib.redirect_stdout(fh):
        hvq.train.train(load_config(config), run_dir, device="cpu", progress=False)
    states = {k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in made.items()}
    params = {k: [n for n, _ in m.named_parameters()] for k, m in made.items()}
    out = {"states": states, "params": params, "knobs": torch.stack(knobs)}
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")


def run_ranks(config: Path, run_dir: Path, out_dir: Path) -> list[dict[str, Any]]:
    """Train with :data:`WORLD` processes; returns each rank's ``{"states", "params"}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mp.spawn(
        _worker, args=(WORLD, free_port(), str(config), str(run_dir), str(out_dir)), nprocs=WORLD, join=True
    )
    ranks = [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for r, rank in enumerate(ranks):
        rank["stdout"] = (out_dir / f"rank{r}.out").read_text()
    return ranks


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], names: list[str]) -> list[str]:
    """Names among ``names`` whose tensors differ between ``a`` and ``b``."""
    return [n for n in names if not torch.equal(a[n], b[n])]


def log_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "log.csv", newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two ranks for 2 steps, then both again with ``steps: 3`` (a resume); everything the tests read."""
    root = tmp_path_factory.mktemp("ddp")
    write_images(root / "images")
    run_dir = root / "run"
    cfg2 = write_config(root / "smoke2.yaml", root / "images")
    first = run_ranks(cfg2, run_dir, root / "first")
    after_first = {
        "ckpt": load_checkpoint(run_dir / "checkpoint.pt"),
        "log": log_steps(run_dir),
        "files": sorted(p.name for p in run_dir.iterdir()),
    }
    cfg3 = write_config(root / "smoke3.yaml", root / "images", steps=3)
    second = run_ranks(cfg3, run_dir, root / "second")
    return {"run_dir": run_dir, "first": first, "second": second, "after_first": after_first}


@pytest.mark.parametrize("phase", ["first", "second"])
@pytest.mark.parametrize("module", ["model", "disc"])
def test_ranks_end_with_identical_parameters(ddp_run: dict[str, Any], phase: str, module: str) -> None:
    r0, r1 = ddp_run[phase]
    names = r0["params"][module]
    assert names, f"{module} has no parameters?"
    diff = differing(r0["states"][module], r1["states"][module], names)
    assert not diff, f"{module} parameters differ between ranks after the {phase} run: {diff[:8]}"


@pytest.mark.parametrize("phase", ["first", "second"])
def test_ranks_draw_their_own_rate_knobs(ddp_run: dict[str, Any], phase: str) -> None:
    """Each rank samples its own (lambda, ratios), also after a resume (the checkpoint holds one RNG)."""
    r0, r1 = ddp_run[phase]
    assert r0["knobs"].shape == r1["knobs"].shape
    assert not torch.equal(r0["knobs"], r1["knobs"]), f"both ranks drew the same knobs in the {phase} run"


def test_rank0_wrote_checkpoint_and_log(ddp_run: dict[str, Any]) -> None:
    first = ddp_run["after_first"]
    assert {"checkpoint.pt", "config.json", "log.csv"} <= set(first["files"])
    assert not [f for f in first["files"] if f.endswith(".tmp")]  # atomic writes left nothing behind
    assert first["log"] == [1, 2]  # one row per step from rank 0 only (rank 1 writes no rows)
    ckpt = first["ckpt"]
    assert ckpt["step"] == 2
    r0 = ddp_run["first"][0]
    for module in ("model", "disc"):
        names = r0["params"][module]
        assert not differing(ckpt[module], r0["states"][module], names), f"checkpoint {module} != rank 0"


def test_resume_continues_from_step_2(ddp_run: dict[str, Any]) -> None:
    run_dir = ddp_run["run_dir"]
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["step"] == 3
    assert log_steps(run_dir) == [1, 2, 3]  # the second run appended only step 3
    # The second run started from the checkpoint: rank 0 says so, and Adam has taken 3 steps, not 1.
    assert f"resumed from {run_dir / 'checkpoint.pt'} at step 2" in ddp_run["second"][0]["stdout"]
    assert "resumed" not in ddp_run["second"][1]["stdout"]  # rank 1 prints nothing
    assert {int(s["step"]) for s in ckpt["opt"]["state"].values()} == {3}
    assert {int(s["step"]) for s in ckpt["opt_d"]["state"].values()} == {3}
