"""The ``hvq`` command line: the one place that parses arguments and prints.

    hvq demo                                  compress + decompress a Kodak image, print bpp and checks
    hvq demo --web [--port N] [--no-browser]  the rate-control demo as a web page (Voila; hvq[web])
    hvq compress in.png out.hvq [--lam L] [--coarse R] [--medium R] [--model NAME|PATH] [--force]
    hvq decompress in.hvq out.png [--force]
    hvq info in.hvq
    hvq train --config configs/reduced.yaml [--run-dir runs/reduced] [--steps N] [--device cpu]
    hvq data download kodak|div2k-train [--data-dir DIR]

``main(argv)`` returns the exit code; expected failures (missing or unreadable files, corrupt
bitstreams, foreign checkpoints) print one line ``hvq: error: ...`` and return 2, without a traceback.
Warnings print as one line ``hvq: warning: ...``. A SIGTERM unwinds like an exception (exit status 143),
so an output being written leaves no temporary file behind.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

from hvq.errors import BitstreamError, CheckpointError
from hvq.files import sigterm_unwinds

EXPECTED_ERRORS = (BitstreamError, CheckpointError, OSError, ValueError, RuntimeError, KeyError)


def _load_model(name: str, device: str = "cpu"):
    from hvq.pretrained import available, load_pretrained

    if Path(name).suffix or name in available():
        return load_pretrained(name, device)
    if name == "reduced":  # nothing shipped yet: an untrained model of the same architecture
        import torch

        from hvq.config import load_config
        from hvq.model import HVQCodec

        print("hvq: note: no trained 'reduced' model is shipped yet; using an untrained one", file=sys.stderr)
        torch.manual_seed(0)
        model = HVQCodec(load_config("reduced").model).eval()
        model.update()
        return model
    raise FileNotFoundError(f"no model {name!r}")


def _write_bytes(path: Path, data: bytes, force: bool) -> None:
    from hvq.files import atomic_write

    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    atomic_write(path, lambda fh: fh.write(data))


def cmd_compress(args) -> int:
    from hvq.data import load_image
    from hvq.metrics import bits_per_pixel
    from hvq.model import MAX_CODEC_PIXELS

    x = load_image(args.input, max_pixels=MAX_CODEC_PIXELS)  # refused from the header, before decoding
    model = _load_model(args.model)
    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists (use --force to overwrite)")
    roi = _parse_roi(args.roi, x.shape[1], x.shape[2]) if args.roi else None
    t0 = time.perf_counter()
    if args.bpp is not None:
        from hvq.ratecontrol import compress_to_bpp

        lam = args.lam if args.lam is not None else math.sqrt(model.cfg.lambda_min * model.cfg.lambda_max)
        data = compress_to_bpp(model, x, args.bpp, lams=[lam], roi=roi).data
    else:
        data = model.compress(x, lam=args.lam, coarse_ratio=args.coarse, medium_ratio=args.medium, roi=roi)
    dt = time.perf_counter() - t0
    _write_bytes(out, data, args.force)
    h, w = x.shape[1:]
    print(f"{out}: {len(data)} bytes, {bits_per_pixel(len(data), h, w):.4f} bpp ({w}x{h}), {dt:.2f} s")
    return 0


def _parse_roi(spec: str, height: int, width: int):
    """``x0,y0,x1,y1`` (a box in pixels) or the path of a mask image (non-zero = region of interest)."""
    from hvq.nets.router import box_mask

    parts = spec.split(",")
    if len(parts) == 4 and all(p.strip().lstrip("-").isdigit() for p in parts):
        return box_mask(height, width, tuple(int(p) for p in parts))
    from hvq.data import load_image

    mask = load_image(spec).amax(0)
    if mask.shape != (height, width):
        raise ValueError(f"--roi mask {spec} is {mask.shape[1]}x{mask.shape[0]}, the image {width}x{height}")
    return (mask > 0).float()


def cmd_decompress(args) -> int:
    from hvq.data import save_image

    data = Path(args.input).read_bytes()
    model = _load_model(args.model)
    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists (use --force to overwrite)")
    t0 = time.perf_counter()
    x_hat = model.decompress(data)
    dt = time.perf_counter() - t0
    save_image(x_hat, out)
    print(f"{out}: {x_hat.shape[2]}x{x_hat.shape[1]}, decoded in {dt:.2f} s")
    return 0


def cmd_info(args) -> int:
    from hvq.container import Container
    from hvq.tiles import is_tiled_file, read_tiles

    data = Path(args.input).read_bytes()
    c = Container.from_bytes(data)
    print(f"{args.input}: {len(data)} bytes, image {c.width}x{c.height}, model tag {c.model_tag.hex()}")
    if not is_tiled_file(data):
        if len(c.knobs) >= 3:
            print(f"  {_knob_text(c)}")
        if len(c.knobs) == 6:
            print(f"  colour offset (R, G, B) {_colour_text(c)} levels")
        _print_streams([c], c.width * c.height)
        return 0
    grid, tile_files = read_tiles(data, c.model_tag)
    tiles = [Container.from_bytes(t) for t in tile_files]
    rows, cols = grid.shape
    print(f"  tiles: {rows} x {cols} (at most {grid.side}x{grid.side} pixels each, overlap {grid.overlap})")
    same = all(t.knobs[:3] == tiles[0].knobs[:3] for t in tiles)
    print(f"  {_knob_text(tiles[0])} ({'every tile' if same else 'tile 1'})")
    _print_streams(tiles, c.width * c.height)
    for i, (t, ((top, bottom), (left, right))) in enumerate(zip(tiles, grid.boxes(), strict=True)):
        size = len(tile_files[i])
        print(
            f"  tile {i + 1:<3} rows {top}:{bottom}, columns {left}:{right}: {size} bytes, "
            f"{8 * size / ((bottom - top) * (right - left)):.4f} bpp, colour offset {_colour_text(t)}"
        )
    return 0


def _knob_text(c) -> str:
    """Lambda and the two ratios of one image's container."""
    return f"{_lambda_text(c)}, coarse ratio {c.knobs[1]:.3f}, medium ratio {c.knobs[2]:.3f}"


def _colour_text(c) -> str:
    """The colour offset of one image's container, in levels (R, G, B)."""
    return ", ".join(f"{v / 4:+.2f}" for v in c.knobs[3:6])


def _print_streams(containers: list, pixels: int) -> None:
    """Bytes and bits per pixel of each stream, summed over the containers (the tiles of one image)."""
    from hvq.model import STREAM_NAMES as names

    n = len(containers[0].streams)
    for i in range(n):
        size = sum(len(c.streams[i]) for c in containers if i < len(c.streams))
        label = names[i] if n == len(names) else f"stream {i}"
        print(f"  {label:<13} {size:>8} bytes  {8 * size / pixels:.4f} bpp")


def _lambda_text(c) -> str:
    """The file's lambda index, and its lambda when a shipped model wrote the file (its card holds the
    tag and the trained range, so no model is loaded)."""
    from hvq.nets.integer import lambda_grid_t
    from hvq.pretrained import available, model_card

    index = int(c.knobs[0])
    for name in available():
        card = model_card(name)
        if card.get("model_tag") == c.model_tag.hex():
            lo, hi = card["config"]["model"]["lambda_min"], card["config"]["model"]["lambda_max"]
            lam = math.exp(math.log(lo) + lambda_grid_t(index) * (math.log(hi) - math.log(lo)))
            return f"lambda {lam:.4g} (index {index}, model {name})"
    return f"lambda index {index}"


def cmd_demo(args) -> int:
    if args.web:
        return serve_web_demo(args)
    import torch

    from hvq.data import kodak_images, load_image
    from hvq.metrics import bits_per_pixel, psnr

    images = kodak_images(args.data_dir)
    path = next((p for p in images if p.stem == args.image), None)
    if path is None:
        raise FileNotFoundError(f"{args.image} not among the Kodak images")
    x = load_image(path)
    model = _load_model(args.model)
    h, w = x.shape[1:]
    lam = args.lam if args.lam is not None else model.cfg.lambda_max**0.5 * model.cfg.lambda_min**0.5
    print(f"hvq demo: {path.name} ({w}x{h}), model {args.model!r}, lambda {lam:.3g}")
    for rc, rm in ((0.8, 0.6), (0.5, 0.5), (0.2, 0.3)):
        t0 = time.perf_counter()
        data = model.compress(x, lam=lam, coarse_ratio=rc, medium_ratio=rm)
        t1 = time.perf_counter()
        x_hat = model.decompress(data)
        t2 = time.perf_counter()
        same = bool(torch.equal(x_hat, model.reconstruct(x, lam, rc, rm)))
        print(
            f"  ratios coarse={rc:.1f} medium={rm:.1f}: {len(data):>6} bytes = "
            f"{bits_per_pixel(len(data), h, w):.4f} bpp, PSNR {psnr(x, x_hat):.2f} dB, "
            f"encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s, round trip == network output: {same}"
        )
        if not same:
            raise RuntimeError("decoded image differs from the network's reconstruction")
    return 0


def serve_web_demo(args) -> int:
    """``hvq demo --web``: Voila serves the shipped demo notebook (``hvq.webdemo.NOTEBOOK``) until
    interrupted; the model and the data folder reach its kernel through the environment."""
    import importlib.util
    import subprocess

    from hvq.webdemo import NOTEBOOK

    if importlib.util.find_spec("voila") is None:
        raise RuntimeError('the web demo needs Voila, which is not installed: pip install "hvq[web]"')
    model = str(Path(args.model).resolve()) if Path(args.model).suffix else args.model  # a name or a path
    env = dict(os.environ, HVQ_DEMO_MODEL=model)
    if args.data_dir is not None:
        env["HVQ_DATA_DIR"] = str(Path(args.data_dir).resolve())
    command = [sys.executable, "-m", "voila", str(NOTEBOOK), f"--port={args.port}"]
    if args.no_browser:
        command.append("--no-browser")
    return subprocess.run(command, env=env, check=False).returncode


def cmd_train(args) -> int:
    from hvq.config import load_config
    from hvq.train import train

    cfg = load_config(args.config)
    run_dir = args.run_dir or f"runs/{cfg.name}"
    ckpt = train(
        cfg, run_dir, data_dir=args.data_dir, steps=args.steps, device=args.device, init_from=args.init_from
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"checkpoint: {ckpt}")
    return 0


def cmd_eval(args) -> int:
    from hvq.evaluate import run_eval
    from hvq.pretrained import available

    # A shipped name or a path is passed through (recorded in the results); otherwise the fallback.
    model = args.model if (args.model in available() or Path(args.model).suffix) else _load_model(args.model)
    out = run_eval(
        args.dataset,
        model=model,
        out_dir=args.out_dir,
        data_dir=args.data_dir,
        limit=args.limit,
        device=args.device,
        threads=args.threads,
        codecs=tuple(args.codecs),
    )
    print(f"results: {out}")
    return 0


def cmd_figures(args) -> int:
    from hvq.plots.figures import make_figures

    written = make_figures(args.results_dir, args.figures_dir, args.dataset, image=args.image)
    for path in written or []:
        print(path)
    return 0


def cmd_export(args) -> int:
    from hvq.data import default_data_dir, find_images
    from hvq.pretrained import export_pretrained

    notes = {"exported_from": str(args.checkpoint)}
    if args.data_note:
        notes["data"] = args.data_note
    train_dir = default_data_dir() / "train"
    if train_dir.is_dir():
        notes["train_images"] = {
            d.name: len(find_images(d)) for d in sorted(train_dir.iterdir()) if d.is_dir()
        }
    out = export_pretrained(args.checkpoint, args.name, notes)
    print(f"{out}: {out.stat().st_size} bytes")
    return 0


def cmd_data(args) -> int:
    from hvq.data import download_dataset

    dest = download_dataset(
        args.name,
        args.data_dir,
        allow_unverified=args.allow_unverified,
        progressbar=sys.stderr.isatty(),  # a tqdm bar in a terminal, none in logs
    )
    print(f"{args.name}: ready in {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hvq", description="HVQ-CGIC image codec kit")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="compress and decompress a Kodak image with the shipped model")
    d.add_argument("--image", default="kodim23")
    d.add_argument("--model", default="reduced")
    d.add_argument("--lam", type=float, default=None)
    d.add_argument("--data-dir", default=None)
    d.add_argument("--web", action="store_true", help="serve the rate-control demo page with Voila instead")
    d.add_argument("--port", type=int, default=8866, help="port of the demo page (with --web)")
    d.add_argument("--no-browser", action="store_true", help="do not open a browser (with --web)")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("compress", help="image -> .hvq")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--model", default="reduced")
    c.add_argument("--lam", type=float, default=None, help="rate knob lambda (default: middle of range)")
    c.add_argument("--coarse", type=float, default=0.5, help="fraction of 16x16 cells coded coarse")
    c.add_argument("--medium", type=float, default=0.5, help="fraction of the other 8x8 cells coded medium")
    c.add_argument("--bpp", type=float, default=None, help="target bits per pixel (searches the ratios)")
    c.add_argument("--roi", default=None, help="region kept fine: a box x0,y0,x1,y1 or a mask image path")
    c.add_argument("--force", action="store_true", help="overwrite the output")
    c.set_defaults(func=cmd_compress)

    x = sub.add_parser("decompress", help=".hvq -> PNG")
    x.add_argument("input")
    x.add_argument("output")
    x.add_argument("--model", default="reduced")
    x.add_argument("--force", action="store_true")
    x.set_defaults(func=cmd_decompress)

    i = sub.add_parser("info", help="describe a .hvq file")
    i.add_argument("input")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("train", help="train (or resume) a model from a config")
    t.add_argument("--config", required=True)
    t.add_argument("--run-dir", default=None)
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--data-dir", default=None)
    t.add_argument("--device", default=None)
    t.add_argument("--init-from", default=None, help="start a new run from this checkpoint's weights")
    t.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate hvq and classical anchors on a dataset (CSV, JSON)")
    ev.add_argument("--dataset", default="kodak")
    ev.add_argument("--model", default="reduced")
    ev.add_argument("--out-dir", default="results")
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--limit", type=int, default=None)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--threads", type=int, default=None)
    ev.add_argument("--codecs", nargs="+", default=["jpeg", "webp", "avif", "jxl"])
    ev.set_defaults(func=cmd_eval)

    fg = sub.add_parser("figures", help="draw every figure from the results files")
    fg.add_argument("--dataset", default="kodak")
    fg.add_argument("--results-dir", default="results")
    fg.add_argument("--figures-dir", default="figures")
    fg.add_argument("--image", default="kodim23")
    fg.set_defaults(func=cmd_figures)

    e = sub.add_parser("export", help="ship a training checkpoint as hvq/pretrained/<name>.pt")
    e.add_argument("checkpoint")
    e.add_argument("--name", default="reduced")
    e.add_argument("--data-note", default=None, help="free text recorded in the model card")
    e.set_defaults(func=cmd_export)

    da = sub.add_parser("data", help="datasets")
    dsub = da.add_subparsers(dest="data_command", required=True)
    dl = dsub.add_parser("download", help="download and verify a dataset")
    dl.add_argument("name")
    dl.add_argument("--data-dir", default=None)
    dl.add_argument("--allow-unverified", action="store_true")
    dl.set_defaults(func=cmd_data)
    return p


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None, line=None
) -> None:
    """Print a warning as one line ``hvq: warning: ...`` (replaces ``warnings.showwarning`` in main)."""
    print(f"hvq: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like an exception, so that atomic writes remove their temporary files.
    with sigterm_unwinds(), warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command; expected failures become one line on stderr and exit code 2."""
    try:
        return args.func(args)
    except EXPECTED_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError quotes its text
        print(f"hvq: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hvq: interrupted", file=sys.stderr)
        return 130
