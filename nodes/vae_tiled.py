"""VAEDecodeTiled / VAEEncodeTiled: VAE decode and encode in tiles, for images too large to pass
through the VAE at once, with ComfyUI 0.3.64's inputs (the temporal ones only matter for video VAEs)."""
from __future__ import annotations

from nodegraph import Input, Int, Node, NodeInputError, Output

from .sd.tiling import check_tiling
from .sd.vae_tiled import decode_tiled, encode_tiled

_TEMPORAL_SIZE = "Only used for video VAEs: Amount of frames to {} at a time."
_TEMPORAL_OVERLAP = "Only used for video VAEs: Amount of frames to overlap."


class VAEDecodeTiled(Node):
    """Decodes latents into images tile by tile: bounded memory for any image size."""
    display_name = "VAE Decode (Tiled)"
    category = "_for_testing"
    inputs = (Input("samples", "LATENT"), Input("vae", "VAE"),
              Int("tile_size", 512, min=64, max=4096, step=32),
              Int("overlap", 64, min=0, max=4096, step=32),
              Int("temporal_size", 64, min=8, max=4096, step=4, tooltip=_TEMPORAL_SIZE.format("decode")),
              Int("temporal_overlap", 8, min=4, max=4096, step=4, tooltip=_TEMPORAL_OVERLAP))
    outputs = (Output("IMAGE"),)

    def run(self, samples, vae, tile_size, overlap, temporal_size=64, temporal_overlap=8):
        # As ComfyUI: an overlap above a quarter of the tile is lowered to a quarter, so the
        # narrow tiles (half the tile) still advance. SD1's VAE is not a video VAE: no temporal tiling.
        if tile_size < overlap * 4:
            overlap = tile_size // 4
        factor = vae.downscale
        return (decode_tiled(vae, samples["samples"], tile=tile_size // factor, overlap=overlap // factor),)


class VAEEncodeTiled(Node):
    """Encodes images into latents tile by tile (sides cropped to multiples of 8)."""
    display_name = "VAE Encode (Tiled)"
    category = "_for_testing"
    inputs = (Input("pixels", "IMAGE"), Input("vae", "VAE"),
              Int("tile_size", 512, min=64, max=4096, step=64),
              Int("overlap", 64, min=0, max=4096, step=32),
              Int("temporal_size", 64, min=8, max=4096, step=4, tooltip=_TEMPORAL_SIZE.format("encode")),
              Int("temporal_overlap", 8, min=4, max=4096, step=4, tooltip=_TEMPORAL_OVERLAP))
    outputs = (Output("LATENT"),)

    def run(self, pixels, vae, tile_size, overlap, temporal_size=64, temporal_overlap=8):
        pixels = vae.crop_to_multiple(pixels)
        problem = check_tiling(tuple(pixels.shape[1:3]), tile_size, overlap)
        if problem is not None:
            raise NodeInputError("overlap", f"{problem}; lower the overlap or raise tile_size")
        return ({"samples": encode_tiled(vae, pixels, tile=tile_size, overlap=overlap)},)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (VAEDecodeTiled, VAEEncodeTiled)}
