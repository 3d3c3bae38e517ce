"""Drive the live demo page (``hvq demo --web``) in headless Chromium and check that it answers.

Starts ``hvq demo --web --no-browser`` on a free port, opens the page with Playwright in Debian's
Chromium (``apt-get install chromium``; Playwright's own browser download is not needed), waits for the
app, then moves the target-bpp slider (typing into its readout, as a person can) a few times and ticks
the region-of-interest box. After every move it checks that the app answered: the move counter rose,
the readout's target is the slider's value, the achieved bpp (from the file size) moved the way the
target did and lies within 3% of it, and the decoded image and the bits map changed (SHA-256 of the
PNG bytes behind each ``<img>``). It prints the seconds per move, measured in the browser (from the
key press to the new readout) and in the kernel (wall-clock and CPU time; with one thread the CPU time
is what the move takes on an idle core), and saves screenshots to ``--out``: ``before.png`` (the page
as it opens), ``after.png`` (after the slider moves) and ``roi.png`` (with the region of interest).

    python benchmarks/web_demo_check.py [--out figures/web_demo] [--port N] [--chromium PATH]

Exit status 0: every check passed; 1: a check failed (one line says which); 2: Chromium, Voila or
Playwright is missing (one line says which, and how to install it). Wall-clock times are pessimistic
when other processes use the cores; ``OMP_NUM_THREADS`` in the environment reaches the kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
#: Seconds to wait for the page (kernel start, model load, first move) and for each move.
PAGE_TIMEOUT_S, MOVE_TIMEOUT_S = 180, 60
#: The rate control lands within 2% of the target; the readout rounds to 4 decimals.
BPP_TOLERANCE = 0.03
#: Each move multiplies the target by these factors (the slider clamps to its reachable band).
TARGET_FACTORS = (0.5, 1.8, 1.2)

#: The state the check reads after every move: readout numbers and hashes of the two pictures.
READ_STATE_JS = """async () => {
    const text = (sel) => document.querySelector(sel).textContent.trim();
    const sha = async (sel) => {
        const bytes = await (await fetch(document.querySelector(sel).src)).arrayBuffer();
        const digest = await crypto.subtle.digest("SHA-256", bytes);
        return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    };
    return {
        move: parseInt(text("#hvq-move")),
        target: parseFloat(text("#hvq-target")),
        bpp: parseFloat(text("#hvq-bpp")),
        seconds: parseFloat(text("#hvq-seconds")),
        cpu_seconds: parseFloat(text("#hvq-cpu-seconds")),
        slider: parseFloat(text(".hvq-target-bpp .widget-readout")),
        reconstruction: await sha("img.hvq-reconstruction"),
        bits_map: await sha("img.hvq-bits-map"),
    };
}"""


class CheckFailed(Exception):
    """One check of the page failed; the message says which."""


def missing_tools(chromium: Path) -> str | None:
    """One line naming what is missing to run the check, or ``None``."""
    if importlib.util.find_spec("voila") is None or importlib.util.find_spec("playwright") is None:
        return 'voila or playwright is not installed: pip install "hvq[web]"'
    if not chromium.is_file():
        return f"no Chromium at {chromium}: apt-get install -y chromium (or pass --chromium PATH)"
    return None


def free_port() -> int:
    """A TCP port that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def demo_server(port: int, log: Path) -> Iterator[str]:
    """Run ``hvq demo --web --no-browser`` on ``port`` in its own process group; yield the page's URL
    once it answers, and stop the group (hvq, Voila, the kernel) at the end."""
    command = [sys.executable, "-m", "hvq", "demo", "--web", "--no-browser", "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://localhost:{port}/"
    try:
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise CheckFailed(f"hvq demo --web exited with {server.returncode}: {log.read_text()[-500:]}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise CheckFailed(f"no answer on {url} after {PAGE_TIMEOUT_S} s") from None
                time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def small_png(png: bytes, path: Path) -> None:
    """Save a screenshot as a 256-colour PNG (a third of the size, still readable)."""
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(path, optimize=True)


def wait_for_move(page, after: int) -> dict:
    """Wait until the move counter exceeds ``after`` (or the app reports an error); the new state."""
    page.wait_for_function(
        "(after) => document.querySelector('.hvq-status .hvq-error') !== null"
        " || parseInt(document.querySelector('#hvq-move').textContent) > after",
        arg=after,
        timeout=MOVE_TIMEOUT_S * 1000,
    )
    error = page.query_selector(".hvq-status .hvq-error")
    if error is not None:
        raise CheckFailed(f"the app reported: {error.text_content()}")
    return page.evaluate(READ_STATE_JS)


def check_move(before: dict, after: dict, what: str, changes: tuple[str, ...]) -> None:
    """The checks every move must pass (see the module docstring)."""
    if after["move"] != before["move"] + 1:
        raise CheckFailed(f"{what}: move counter went {before['move']} -> {after['move']}, expected +1")
    if abs(after["target"] - after["slider"]) > 1e-9:
        raise CheckFailed(f"{what}: readout target {after['target']} is not the slider's {after['slider']}")
    if abs(after["bpp"] / after["target"] - 1) > BPP_TOLERANCE:
        raise CheckFailed(f"{what}: achieved {after['bpp']} bpp for a target of {after['target']}")
    for key in changes:
        if after[key] == before[key]:
            raise CheckFailed(f"{what}: the {key.replace('_', ' ')} did not change")


def run_check(chromium: Path, out_dir: Path, port: int) -> list[dict]:
    """Open the page, make the moves and check each; one row per move. Raises :class:`CheckFailed`."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, demo_server(port, Path(tmp) / "voila.log") as url:
        with sync_playwright() as playwright:
            args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root without it
            browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=args)
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            t0 = time.perf_counter()
            page.goto(url)
            try:
                page.wait_for_selector("#hvq-move, .hvq-error", timeout=PAGE_TIMEOUT_S * 1000)
            except PlaywrightError as exc:
                raise CheckFailed(f"the app did not appear within {PAGE_TIMEOUT_S} s") from exc
            if (error := page.query_selector(".hvq-error")) is not None:
                raise CheckFailed(f"the page shows an error: {' '.join(error.inner_text().split())}")
            print(f"page ready in {time.perf_counter() - t0:.1f} s (kernel start, model load, first move)")
            state = page.evaluate(READ_STATE_JS)
            small_png(page.locator(".hvq-demo").screenshot(), out_dir / "before.png")
            readout = page.locator(".hvq-target-bpp .widget-readout")
            for factor in TARGET_FACTORS:
                readout.click()
                page.keyboard.press("Control+A")
                page.keyboard.type(f"{state['target'] * factor:.3f}")
                t0 = time.perf_counter()
                page.keyboard.press("Enter")
                new = wait_for_move(page, state["move"])
                rows.append({"action": f"target x{factor}", "browser_s": time.perf_counter() - t0, **new})
                what = f"target {state['target']} -> {new['target']}"
                check_move(state, new, what, ("bpp", "reconstruction"))
                if (new["bpp"] - state["bpp"]) * (new["target"] - state["target"]) <= 0:
                    raise CheckFailed(f"bpp went {state['bpp']} -> {new['bpp']} for target {new['target']}")
                state = new
            small_png(page.locator(".hvq-demo").screenshot(), out_dir / "after.png")
            box_slider = page.locator(".hvq-roi-x .noUi-target")
            if box_slider.get_attribute("disabled") is None:
                raise CheckFailed("the box sliders are enabled with the region of interest off")
            t0 = time.perf_counter()
            page.locator(".hvq-roi input").check()
            new = wait_for_move(page, state["move"])
            rows.append({"action": "region of interest on", "browser_s": time.perf_counter() - t0, **new})
            check_move(state, new, "region of interest", ("bits_map",))
            if box_slider.get_attribute("disabled") is not None:
                raise CheckFailed("the box sliders stay disabled with the region of interest on")
            small_png(page.locator(".hvq-demo").screenshot(), out_dir / "roi.png")
            browser.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "figures" / "web_demo", help="screenshots go here")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--chromium", type=Path, default=CHROMIUM)
    args = parser.parse_args(argv)
    if (missing := missing_tools(args.chromium)) is not None:
        print(f"web_demo_check: {missing}", file=sys.stderr)
        return 2
    try:
        rows = run_check(args.chromium, args.out, args.port or free_port())
    except CheckFailed as exc:
        print(f"web_demo_check: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"{'move':<24}{'target':>8}{'bpp':>9}{'browser s':>11}{'kernel s':>10}{'kernel CPU s':>14}")
    for row in rows:
        numbers = f"{row['target']:>8.3f}{row['bpp']:>9.4f}{row['browser_s']:>11.2f}{row['seconds']:>10.2f}"
        print(f"{row['action']:<24}{numbers}{row['cpu_seconds']:>14.2f}")
    worst = max(row["browser_s"] for row in rows)
    print(f"all checks passed; slowest move {worst:.2f} s in the browser; screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
