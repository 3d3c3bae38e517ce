"""The plotting room: every figure of the kit, for the notebooks, ``hvq figures`` and the demo page.

* :mod:`hvq.plots.maps`: per-position maps from decoded symbols (bits, bits per pixel, granularity),
  stream sizes, the granularity palette (``GRANULARITY_COLOURS``), a live training plot;
* :mod:`hvq.plots.figures`: one function per figure (RD curves from the results CSVs, crops at equal
  rate, the notebooks' figures);
* :mod:`hvq.plots.rd`: the Kodak RD curves read from the committed results, BD-rate tables, and the
  lambda panel of notebook 04.

Measurements come from :mod:`hvq.metrics` (one path for PSNR, MS-SSIM, LPIPS and colour bias).
"""
