"""The rate-control demo as an ipywidgets app (what ``hvq demo --web`` serves through Voila).

A *move* (a new image, target rate or region of interest) runs
:func:`hvq.ratecontrol.compress_to_bpp` on a downscaled Kodak image, decodes the file, and shows the
reconstruction, where the index bits went (:func:`hvq.plots.maps.bits_per_pixel_map`) and a readout of the
file: achieved bpp, bytes, PSNR and the seconds the move took. Each move starts from the pixels, so
the time per move is the rate control's own; what is cached is per image (the downscaled pixels and
the reachable band that sets the slider's range). At ``LONG_SIDE = 384`` a move costs 1.0-1.6 s of CPU
time with one thread on the four demo images (``benchmarks/web_demo_check.py`` times it in a browser).

:func:`rate_move` is the computation without widgets. For a browser test every control and output
carries a CSS class from ``CSS_CLASSES``, and the readout has elements with the ids ``hvq-target``,
``hvq-bpp``, ``hvq-bytes``, ``hvq-psnr``, ``hvq-ratios``, ``hvq-seconds``, ``hvq-cpu-seconds`` and
``hvq-move`` (the count of finished moves, so that a test can wait for the next one).

    >>> from hvq.webdemo.app import build_app
    >>> build_app()             # in a notebook cell: the app   # doctest: +SKIP
"""

from __future__ import annotations

import html
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from hvq import bitstream
from hvq.data import kodak_dir, load_image
from hvq.metrics import bits_per_pixel, psnr
from hvq.model import HVQCodec
from hvq.nets.router import box_mask
from hvq.plots.maps import bits_per_pixel_map
from hvq.pretrained import load_pretrained
from hvq.ratecontrol import RateTargetError, compress_to_bpp, reachable_bpp

#: Kodak images offered by the picker: a portrait, hats, a lighthouse, parrots.
DEMO_IMAGES = ("kodim04", "kodim03", "kodim19", "kodim23")
#: Images are downscaled (area filter) to this many pixels on their long side: one move stays under
#: 2 s on a CPU core (the search and the decoder scale with the pixel count).
LONG_SIDE = 384
#: Resolution of the target slider, in bits per pixel.
BPP_STEP = 0.005
#: The bits map's colour scale runs from 0 to this many index bits per pixel (fine codes of the
#: shipped model cost up to about 1 bit per pixel; larger values saturate).
BITS_MAP_VMAX = 1.0
#: Step of the region-of-interest sliders in pixels (the router's cells are 8x8 and 16x16).
BOX_STEP = 8
#: CSS classes of the widgets, the stable handles of the browser test.
CSS_CLASSES = {
    "app": "hvq-demo",
    "image": "hvq-image",
    "target": "hvq-target-bpp",
    "roi": "hvq-roi",
    "roi_x": "hvq-roi-x",
    "roi_y": "hvq-roi-y",
    "reconstruction": "hvq-reconstruction",
    "bits_map": "hvq-bits-map",
    "readout": "hvq-readout",
    "status": "hvq-status",
    "error": "hvq-error",
}

Box = tuple[int, int, int, int]


@dataclass
class DemoImage:
    """One picker entry, prepared once: the downscaled pixels and the band a target must lie in."""

    name: str
    x: Tensor  # (3, H, W) in [0, 1], long side LONG_SIDE at most
    low_bpp: float  # estimated rate with every cell coarse
    high_bpp: float  # estimated rate with every cell fine


@dataclass
class MoveResult:
    """What one move shows: the decoded file, where its index bits went, and the readout."""

    data: bytes  # the .hvq file
    x_hat: Tensor  # (3, H, W) decoded from it
    bits_map: np.ndarray  # (H, W) index bits per pixel
    bpp: float  # from the file size
    target_bpp: float
    psnr_db: float
    coarse_ratio: float
    medium_ratio: float
    seconds: float  # wall-clock time of the whole move: search, decode, bits map
    cpu_seconds: float  # CPU time of this process during the move (the wall time on an idle core
    # with one thread; above the wall time when torch uses several threads)


def downscale(x: Tensor, long_side: int) -> Tensor:
    """``x (3, H, W)`` shrunk with an area filter so that its long side is at most ``long_side``."""
    scale = long_side / max(x.shape[1:])
    if scale >= 1:
        return x
    size = (max(1, round(x.shape[1] * scale)), max(1, round(x.shape[2] * scale)))
    return F.interpolate(x[None], size=size, mode="area")[0]


def prepare_image(model: HVQCodec, path: Path, long_side: int = LONG_SIDE) -> DemoImage:
    """Load ``path``, downscale it and estimate its reachable band (:func:`reachable_bpp`)."""
    x = downscale(load_image(path), long_side)
    low, high = reachable_bpp(model, x)
    return DemoImage(path.stem, x, low, high)


def rate_move(model: HVQCodec, x: Tensor, target_bpp: float, box: Box | None = None) -> MoveResult:
    """Compress ``x (3, H, W)`` to ``target_bpp`` (with the pixels of ``box = (x0, y0, x1, y1)`` coded
    fine, if given), decode the file, and map the index bits of the decoded symbols.

    Raises:
        RateTargetError: the target is outside what this image (and box) can reach.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    height, width = x.shape[1:]
    roi = box_mask(height, width, box) if box is not None else None
    res = compress_to_bpp(model, x, target_bpp, roi=roi)
    sym = bitstream.decode(model, res.data)  # what the decoder reads: model.decompress, in two steps
    x_hat = model.synthesize(sym)
    return MoveResult(
        data=res.data,
        x_hat=x_hat,
        bits_map=bits_per_pixel_map(sym),
        bpp=bits_per_pixel(len(res.data), height, width),
        target_bpp=target_bpp,
        psnr_db=psnr(x, x_hat),
        coarse_ratio=res.coarse_ratio,
        medium_ratio=res.medium_ratio,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - cpu0,
    )


def image_png(x: Tensor) -> bytes:
    """``(3, H, W)`` in [0, 1] -> PNG bytes."""
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return _png(Image.fromarray(pixels))


def bits_map_png(bits: np.ndarray, box: Box | None = None) -> bytes:
    """``(H, W)`` bits per pixel -> PNG bytes in the magma colour map (0 .. ``BITS_MAP_VMAX``), with the
    region-of-interest box outlined in green."""
    from matplotlib import colormaps

    rgba = colormaps["magma"](np.clip(bits / BITS_MAP_VMAX, 0, 1), bytes=True)
    image = Image.fromarray(rgba[..., :3])
    if box is not None:
        x0, y0, x1, y1 = box
        ImageDraw.Draw(image).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(0, 255, 0), width=2)
    return _png(image)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def readout_html(move: MoveResult, moves: int) -> str:
    """The readout of one move as HTML, each number in an element with a stable id."""
    rows = (
        ("target", "hvq-target", f"{move.target_bpp:.3f} bpp"),
        ("achieved (file size)", "hvq-bpp", f"{move.bpp:.4f} bpp"),
        ("file", "hvq-bytes", f"{len(move.data)} bytes"),
        ("PSNR", "hvq-psnr", f"{move.psnr_db:.2f} dB"),
        ("ratios (coarse, medium)", "hvq-ratios", f"{move.coarse_ratio:.3f}, {move.medium_ratio:.3f}"),
        ("time for this move", "hvq-seconds", f"{move.seconds:.2f} s"),
        ("CPU time for this move", "hvq-cpu-seconds", f"{move.cpu_seconds:.2f} s"),
        ("moves", "hvq-move", str(moves)),
    )
    cells = "".join(f"<tr><td>{label}</td><td id='{ident}'>{value}</td></tr>" for label, ident, value in rows)
    return f"<table>{cells}</table>"


def _slider_band(image: DemoImage) -> tuple[float, float]:
    """Slider limits on the ``BPP_STEP`` grid, 2% inside the reachable band."""
    low = math.ceil(image.low_bpp * 1.02 / BPP_STEP) * BPP_STEP
    high = math.floor(image.high_bpp * 0.98 / BPP_STEP) * BPP_STEP
    return low, high


def _centre_box(width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The middle half of the image in x and in y, on the ``BOX_STEP`` grid."""
    return (
        (width // 4 // BOX_STEP * BOX_STEP, 3 * width // 4 // BOX_STEP * BOX_STEP),
        (height // 4 // BOX_STEP * BOX_STEP, 3 * height // 4 // BOX_STEP * BOX_STEP),
    )


class RateControlApp:
    """Picker, target slider, region of interest and outputs; ``widget`` is what a cell displays."""

    def __init__(self, model: HVQCodec, paths: dict[str, Path], long_side: int = LONG_SIDE) -> None:
        self.model, self.paths, self.long_side = model, paths, long_side
        self._prepared: dict[str, DemoImage] = {}
        self._syncing = False  # True while the controls are set by the app itself (no moves)
        self.moves = 0
        wide = widgets.Layout(width="460px")
        label = {"description_width": "110px"}
        self.image = widgets.Dropdown(options=list(paths), description="image", style=label)
        self.target = widgets.FloatSlider(
            step=BPP_STEP, readout_format=".3f", description="target bpp",
            continuous_update=False, layout=wide, style=label,
        )  # fmt: skip
        self.roi = widgets.Checkbox(value=False, description="region of interest (coded fine)", indent=False)
        self.roi_x, self.roi_y = (
            widgets.IntRangeSlider(
                step=BOX_STEP, description=f"box {axis}", continuous_update=False, disabled=True,
                layout=wide, style=label,
            )
            for axis in "xy"
        )  # fmt: skip
        self.reconstruction = widgets.Image(format="png")
        self.bits_map = widgets.Image(format="png")
        self.readout = widgets.HTML()
        self.status = widgets.HTML()
        parts = ("image", "target", "roi", "roi_x", "roi_y", "reconstruction", "bits_map", "readout")
        for name in (*parts, "status"):
            getattr(self, name).add_class(CSS_CLASSES[name])
        legend = widgets.HTML(
            f"<small>black 0, yellow {BITS_MAP_VMAX:g} or more index bits per pixel; the box in green</small>"
        )
        pictures = widgets.HBox([
            widgets.VBox([widgets.HTML("<b>decoded file</b>"), self.reconstruction]),
            widgets.VBox([widgets.HTML("<b>bits map</b>"), self.bits_map, legend]),
        ])  # fmt: skip
        self.widget = widgets.VBox([
            widgets.HBox([self.image, self.target]),
            widgets.HBox([self.roi, widgets.VBox([self.roi_x, self.roi_y])]),
            pictures,
            widgets.HBox([self.readout, self.status]),
        ])  # fmt: skip
        self.widget.add_class(CSS_CLASSES["app"])
        self.image.observe(self._on_image, names="value")
        self.roi.observe(self._on_roi, names="value")
        for control in (self.target, self.roi_x, self.roi_y):
            control.observe(self._on_control, names="value")
        self._fit_controls(self._prepare(self.image.value))
        self.move()

    def _prepare(self, name: str) -> DemoImage:
        if name not in self._prepared:
            self._prepared[name] = prepare_image(self.model, self.paths[name], self.long_side)
        return self._prepared[name]

    def _fit_controls(self, image: DemoImage) -> None:
        """Slider ranges for ``image``: the target keeps its value if it fits; the box is re-centred."""
        height, width = image.x.shape[1:]
        low, high = _slider_band(image)
        (x0, x1), (y0, y1) = _centre_box(width, height)
        for picture in (self.reconstruction, self.bits_map):  # shown pixel for pixel
            picture.layout.width, picture.layout.height = f"{width}px", f"{height}px"
        self._syncing = True
        try:
            with self.target.hold_trait_notifications():
                self.target.min, self.target.max = low, high
                value = self.target.value if low <= self.target.value <= high else low + 0.4 * (high - low)
                self.target.value = round(value / BPP_STEP) * BPP_STEP
            with self.roi_x.hold_trait_notifications(), self.roi_y.hold_trait_notifications():
                self.roi_x.max, self.roi_y.max = width, height
                self.roi_x.value, self.roi_y.value = (x0, x1), (y0, y1)
        finally:
            self._syncing = False

    def _box(self) -> Box | None:
        if not self.roi.value:
            return None
        (x0, x1), (y0, y1) = self.roi_x.value, self.roi_y.value
        return x0, y0, x1, y1

    def _on_image(self, change: dict) -> None:
        self.status.value = "preparing the image ..."
        self._fit_controls(self._prepare(change["new"]))
        self.move()

    def _on_roi(self, change: dict) -> None:
        self.roi_x.disabled = self.roi_y.disabled = not change["new"]
        self.move()

    def _on_control(self, change: dict) -> None:
        if self._syncing or (change["owner"] is not self.target and not self.roi.value):
            return
        self.move()

    def move(self) -> None:
        """Run one move with the controls' values and show it (or why there is none)."""
        image, box = self._prepare(self.image.value), self._box()
        self.status.value = "computing ..."
        try:
            if box is not None and not (box[0] < box[2] and box[1] < box[3]):
                raise ValueError("the box is empty: widen it")
            result = rate_move(self.model, image.x, self.target.value, box)
        except (RateTargetError, ValueError) as exc:
            self.status.value = f"<span class='{CSS_CLASSES['error']}'>{html.escape(str(exc))}</span>"
            return
        self.moves += 1
        self.reconstruction.value = image_png(result.x_hat)
        self.bits_map.value = bits_map_png(result.bits_map, box)
        self.readout.value = readout_html(result, self.moves)
        height, width = image.x.shape[1:]
        self.status.value = f"{image.name}, {width}x{height} pixels"


def error_widget(message: str) -> widgets.HTML:
    """What the page shows instead of the app when it cannot run (e.g. Kodak is missing)."""
    box = widgets.HTML(f"<p><b>The demo cannot start.</b></p><pre>{html.escape(message)}</pre>")
    box.add_class(CSS_CLASSES["error"])
    return box


def build_app(
    model: str = "reduced",
    data_dir: str | Path | None = None,
    images: tuple[str, ...] = DEMO_IMAGES,
    long_side: int = LONG_SIDE,
) -> widgets.Widget:
    """The demo for a notebook cell: a shipped model name (or checkpoint path) and Kodak images read
    through :func:`hvq.data.kodak_dir`; a clear message instead when Kodak is missing."""
    try:
        directory = kodak_dir(data_dir)
    except (FileNotFoundError, ValueError) as exc:  # missing images, or a checksum mismatch
        return error_widget(str(exc))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    paths = {name: directory / f"{name}.png" for name in images}
    return RateControlApp(load_pretrained(model, device), paths, long_side).widget
