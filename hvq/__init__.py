"""hvq: a teaching and reproduction kit for HVQ-CGIC (arXiv 2512.07192), hyperprior entropy models
for VQ-based controllable generative image compression.

    >>> import hvq
    >>> model = hvq.load_pretrained("reduced")        # doctest: +SKIP
    >>> data = model.compress(image)                   # doctest: +SKIP
    >>> image_hat = model.decompress(data)             # doctest: +SKIP
"""

from hvq.errors import BitstreamError, CheckpointError

__version__ = "0.1.0"


def load_pretrained(name: str = "reduced", device: str = "cpu"):
    """Load a shipped model by name (see :mod:`hvq.pretrained`)."""
    from hvq.pretrained import load_pretrained as _load

    return _load(name, device)


__all__ = ["BitstreamError", "CheckpointError", "__version__", "load_pretrained"]
