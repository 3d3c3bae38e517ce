"""The one exception type for bad bitstreams and files, shared by the coder and the container."""


class BitstreamError(ValueError):
    """A ``.hvq`` bitstream is corrupt, truncated, foreign, or from an incompatible version/model.

    Every failure to read a bitstream raises this (a ``ValueError``), with a message that says what is
    wrong; the decoder never hangs, crashes or allocates memory a crafted header asks for.
    """


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, foreign, or from another format version or model config."""
