"""Networks (torch modules only): encoder, router, quantiser, hyperprior, decoder, discriminator."""

from hvq.nets.decoder import Decoder
from hvq.nets.discriminator import PatchDiscriminator
from hvq.nets.encoder import Encoder
from hvq.nets.hyperprior import Hyperprior
from hvq.nets.quantizer import VectorQuantizer
from hvq.nets.router import route

__all__ = ["Decoder", "Encoder", "Hyperprior", "PatchDiscriminator", "VectorQuantizer", "route"]
