"""Maps from decoded symbols, for the notebooks and figures: per-position bits, granularity, stream sizes.

The *computations* (bits of each coded index from the integer tables, the granularity of every pixel,
the bytes of each stream in a ``.hvq`` file, a box-shaped region of interest) are plain functions
returning numpy arrays or tensors, so they can be tested and reused; the plotting helpers only draw
them with matplotlib (imported lazily, so ``import hvq.plots.maps`` stays cheap).

Granularity order is the model's: ``g = 0`` fine (1/4 resolution), ``1`` medium (1/8), ``2`` coarse
(1/16) (``hvq.model.GRANULARITIES``, ``hvq.model.STRIDES``).

    >>> from hvq.plots import maps                                      # doctest: +SKIP
    >>> sym = model.analyze(x, lam=1.4)                                 # doctest: +SKIP
    >>> maps.bits_map(sym, 0).shape        # (h/4, w/4) bits, NaN where not coded fine   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor

from hvq.container import Container
from hvq.model import GRANULARITIES, STREAM_NAMES, STRIDES, Symbols
from hvq.nets.router import box_mask as box_mask  # re-exported for the notebooks
from hvq.symbols import coded_positions
from hvq.tables import symbol_bits

#: Colours of the fine, medium and coarse granularity in every plot of the kit.
GRANULARITY_COLOURS = ("#d62728", "#ff7f0e", "#1f77b4")
#: Names of the seven streams of a ``.hvq`` file written by :class:`hvq.model.HVQCodec`, in order
#: (the same labels as ``hvq info``).


# ------------------------------------------------------------------------------------- computations


def bits_map(sym: Symbols, g: int, table: np.ndarray | None = None) -> np.ndarray:
    """Bits of the chosen index at every position of granularity ``g``: ``(h_g, w_g)`` float64.

    ``bits = PRECISION - log2(freq[chosen])``, exactly what the range coder spends on it (ideally) with
    the integer table of that position; ``NaN`` where the position is not coded at this granularity.
    With ``table`` (one shared ``(K,)`` table, e.g. ``model.static_freqs``) the same indices are priced
    under that table instead of the hyperprior's. The map covers the padded image (multiples of 16).
    """
    out = np.full(tuple(sym.masks[g].shape[-2:]), np.nan)
    pos = coded_positions(sym.masks[g])
    if len(pos):
        chosen = sym.indices[g][0].numpy().ravel()[pos]
        out.ravel()[pos] = symbol_bits(sym.freqs[g] if table is None else table, chosen)
    return out


def bits_per_pixel_map(sym: Symbols) -> np.ndarray:
    """Index bits spread over the pixels each code covers: ``(H, W)`` bits per pixel.

    A code of granularity ``g`` covers a ``STRIDES[g]**2`` block, so its bits are divided by that
    area. The map is cropped to the image, so it sums to the index bits minus the share of codes that
    covers the padding; z and mask bits are not in it.
    """
    total = None
    for g, s in enumerate(STRIDES):
        b = np.nan_to_num(bits_map(sym, g)) / (s * s)
        up = np.kron(b, np.ones((s, s)))
        total = up if total is None else total + up
    return total[: sym.height, : sym.width]


def granularity_map(sym: Symbols) -> np.ndarray:
    """Granularity of every pixel: ``(H, W)`` int array, 0 fine, 1 medium, 2 coarse."""
    out = None
    for g, s in enumerate(STRIDES):
        m = np.kron(sym.masks[g][0, 0].numpy(), np.ones((s, s)))
        out = g * m if out is None else out + g * m
    return out[: sym.height, : sym.width].astype(np.int64)


def stream_sizes(data: bytes) -> dict[str, int]:
    """Bytes of each named stream of a ``.hvq`` file (as ``hvq info`` prints them), plus ``"header +
    CRCs"`` for the rest of the file. Raises :class:`hvq.errors.BitstreamError` on a bad file."""
    c = Container.from_bytes(data)
    names = STREAM_NAMES
    if len(c.streams) != len(STREAM_NAMES):
        names = [f"stream {i}" for i in range(len(c.streams))]
    sizes = {name: len(s) for name, s in zip(names, c.streams, strict=True)}
    sizes["header + CRCs"] = len(data) - sum(sizes.values())
    return sizes


# ----------------------------------------------------------------------------------------- plotting


def to_numpy_image(x: Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in [0, 1] -> ``(H, W, 3)`` numpy array for ``imshow``."""
    return x.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def show_images(images: Sequence[Tensor], titles: Sequence[str] | None = None, size: float = 4.0, axes=None):
    """Images ``(3, H, W)`` side by side with titles; returns the axes."""
    import matplotlib.pyplot as plt

    if axes is None:
        h, w = images[0].shape[-2:]
        figsize = (size * len(images), size * h / w + 0.5)
        axes = plt.subplots(1, len(images), figsize=figsize, squeeze=False)[1][0]
    for i, (ax, img) in enumerate(zip(axes, images, strict=False)):
        ax.imshow(to_numpy_image(img))
        ax.set_axis_off()
        if titles is not None:  # y fixed: no search of tick labels to clear (the axes are off)
            ax.set_title(titles[i], fontsize=9, y=1.0)
    return axes


def plot_bits_maps(
    sym: Symbols, axes=None, vmax: float | None = None, cmap: str = "magma", table: np.ndarray | None = None
):
    """Three panels, one per granularity: bits of each coded index (grey = not coded there).

    ``table``: price the indices under one shared table instead (see :func:`bits_map`)."""
    import matplotlib.pyplot as plt

    maps = [bits_map(sym, g, table) for g in range(3)]
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 4))
    if vmax is None:
        vmax = max(float(np.nanmax(m)) if np.isfinite(m).any() else 0.0 for m in maps)
    cm = plt.get_cmap(cmap).with_extremes(bad="0.85")
    im = None
    for g, (ax, m) in enumerate(zip(axes, maps, strict=True)):
        n = int(np.isfinite(m).sum())
        total = float(np.nansum(m))
        im = ax.imshow(m, cmap=cm, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{GRANULARITIES[g]} (1/{STRIDES[g]}): {n} codes, {total:.0f} bits", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    plt.colorbar(im, ax=list(axes), label="bits of the chosen index", shrink=0.85)
    return axes


def plot_granularity_map(sym: Symbols, ax=None, image: Tensor | None = None, alpha: float = 0.55):
    """Granularity of every pixel (fine / medium / coarse), optionally over the image."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5 * sym.height / sym.width))
    colours = list(GRANULARITY_COLOURS)
    gm = granularity_map(sym)
    if image is not None:
        ax.imshow(to_numpy_image(image))
    a = alpha if image is not None else 1.0
    ax.imshow(gm, cmap=ListedColormap(colours), vmin=-0.5, vmax=2.5, alpha=a, interpolation="nearest")
    share = [(gm == g).mean() for g in range(3)]
    ax.legend(
        handles=[Patch(color=c, label=f"{GRANULARITIES[g]} {share[g]:.0%}") for g, c in enumerate(colours)],
        loc="lower right", fontsize=7, framealpha=0.9,
    )  # fmt: skip
    ax.set_axis_off()
    return ax


class LivePlot:
    """A training-curve figure redrawn in place from ``hvq.train.train``'s ``callback(row)``.

    ``LivePlot(["loss", "bpp", "psnr"])`` makes one panel per key; calling it with a logged row
    appends the values and, every ``every`` rows, redraws (``IPython.display.clear_output`` +
    ``display``, or the ``display`` callable given). ``rows`` keeps every row, so the history can be
    plotted again after training (``draw()``).
    """

    def __init__(self, keys: Sequence[str] = ("loss", "bpp", "psnr", "lpips"), every: int = 1,
                 display: Callable | None = None) -> None:  # fmt: skip
        self.keys = list(keys)
        self.every = max(1, int(every))
        self.rows: list[dict] = []
        self._display = display

    def __call__(self, row: dict) -> None:
        self.rows.append(dict(row))
        if len(self.rows) % self.every == 0:
            self.draw()

    def draw(self):
        """Redraw the figure from all rows so far; returns it."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(self.keys), figsize=(3.4 * len(self.keys), 2.9), squeeze=False)
        steps = [r["step"] for r in self.rows]
        for ax, k in zip(axes[0], self.keys, strict=True):
            ax.plot(steps, [r[k] for r in self.rows], "o-", ms=3)
            ax.set(xlabel="step", title=k)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        if self._display is not None:
            self._display(fig)
        else:
            from IPython.display import clear_output, display

            clear_output(wait=True)
            display(fig)
        plt.close(fig)
        return fig


def figure_png(fig, fast: bool = False) -> bytes:
    """A figure as PNG bytes. ``fast`` (a slider's redraw): drawn once as laid out, at PNG compression
    level 1; otherwise cropped to its content (``bbox_inches="tight"``, a second drawing pass) at the
    default level, as Jupyter's inline backend does. On notebook 05's ROI figure ``fast`` took about
    half the time in one measurement, for a 16% larger PNG."""
    import io

    buf = io.BytesIO()
    if fast:
        fig.savefig(buf, format="png", pil_kwargs={"compress_level": 1})
    else:
        fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def figure_panel(make_figure: Callable, controls: dict, initial=None, columns: int = 1):
    """ipywidgets controls above an output area that shows ``make_figure(**values)``, redrawn whenever a
    control changes; returns the panel (an ``ipywidgets.VBox``) for ``display``.

    ``make_figure`` takes the controls' values as keyword arguments and returns a matplotlib figure
    (or ``None`` after printing why there is none). ``initial``: a figure already made from the
    controls' current values, e.g. by a direct call that a non-interactive run also shows; it is put
    in the output area as a PNG, so the panel is complete when it appears, without computing it twice.

    Why not ``ipywidgets.interactive``: it runs the function while the cell executes and captures its
    output into an ``Output`` widget. Under nbclient (nbmake, nbconvert) a captured output makes the
    client write to the kernel's shell channel while it awaits the execute reply on that channel, and
    with pyzmq's edge-triggered sockets the reply can then sit unread until the cell's timeout. Here
    the output area is filled from the kernel side only, and ``make_figure`` runs in callbacks, that
    is, only when a person moves a control. A redraw is shown as :func:`figure_png` ``(fast=True)``.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import Image, clear_output, display

    out = widgets.Output()
    if initial is not None:
        out.append_display_data(Image(data=figure_png(initial), format="png"))

    def redraw(_change=None) -> None:
        with out:
            clear_output(wait=True)
            fig = make_figure(**{name: c.value for name, c in controls.items()})
            if fig is not None:
                display(Image(data=figure_png(fig, fast=True), format="png"))
                plt.close(fig)

    for c in controls.values():
        c.observe(redraw, names="value")
    items = list(controls.values())
    rows = [widgets.HBox(items[i : i + columns]) for i in range(0, len(items), columns)]
    return widgets.VBox([*rows, out])
