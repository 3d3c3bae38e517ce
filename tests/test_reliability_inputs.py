"""Killed writers leave no temporary files: SIGTERM unwinds, SIGKILL leftovers are swept by the next write.

The CLI runs in a subprocess with a stand-in model and an ``os.fsync`` that stalls, so the signal
arrives while the temporary file beside the output exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hvq.files import TEMP_MARK, atomic_write, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[1]

#: Runs ``hvq.cli.main(argv)`` with a stand-in model; prints "writing" once the temporary file is
#: written, then stalls in ``os.fsync`` until a signal arrives.
CLI_STALLS_IN_FSYNC = """
import os, sys, time
import torch
import hvq.cli

class Model:
    def compress(self, x, **knobs):
        return b"stand-in bitstream"

    def decompress(self, data):
        return torch.rand(3, 8, 8)

def stall(fd):
    print("writing", flush=True)
    time.sleep(120)

hvq.cli._load_model = lambda name, device="cpu": Model()
os.fsync = stall
sys.exit(hvq.cli.main(sys.argv[1:]))
"""

#: Writes ``argv[1]`` through ``atomic_write`` and stalls mid-write (no torch: starts fast).
WRITER_STALLS = """
import sys, time
from hvq.files import atomic_write

def write(file):
    file.write(b"half")
    file.flush()
    print("writing", flush=True)
    time.sleep(120)

atomic_write(sys.argv[1], write)
"""


def start(script: str, *argv: str | Path) -> subprocess.Popen[str]:
    """Start ``script`` and wait until it reports that its temporary file exists."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, argv)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # "" (EOF) if the script died first
    if line != "writing\n":
        proc.kill()
        raise AssertionError(f"helper did not start writing: {proc.communicate(timeout=30)}")
    return proc


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TEMP_MARK in p.name)


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_sigterm_during_cli_write_leaves_no_temporary(tmp_path: Path, command: str) -> None:
    source = tmp_path / ("in.png" if command == "compress" else "in.hvq")
    if command == "compress":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(source)
    else:
        source.write_bytes(b"stand-in bitstream")
    out = tmp_path / ("out.hvq" if command == "compress" else "out.png")
    proc = start(CLI_STALLS_IN_FSYNC, command, source, out)
    assert len(temporaries(tmp_path)) == 1  # the write is under way
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]  # no output, no temporary


def test_sigkill_leftover_is_removed_by_the_next_write(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    proc = start(WRITER_STALLS, out)
    proc.kill()
    proc.communicate(timeout=30)
    [stale] = temporaries(tmp_path)
    assert stale.startswith(f".out.png{TEMP_MARK}{proc.pid}-")
    live = tmp_path / f".out.png{TEMP_MARK}{os.getpid()}-00000000.tmp"  # a writer still running: kept
    live.write_bytes(b"busy")
    other = tmp_path / f".other.png{TEMP_MARK}{proc.pid}-00000000.tmp"  # another output's: not ours
    other.write_bytes(b"")
    atomic_write(out, lambda file: file.write(b"whole"))
    assert out.read_bytes() == b"whole"
    assert temporaries(tmp_path) == sorted([live.name, other.name])
    assert remove_stale_temporaries(tmp_path / "other.png") == [other]


def test_main_restores_the_sigterm_handler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hvq.cli import main

    before = signal.getsignal(signal.SIGTERM)
    assert main(["info", str(tmp_path / "missing.hvq")]) == 2
    assert signal.getsignal(signal.SIGTERM) is before
    assert capsys.readouterr().err.startswith("hvq: error: ")
