"""Image preprocessors for ControlNet hints, as pure functions on IMAGE tensors ([B, H, W, C], 0..1).

`canny` (kornia's Canny, as ComfyUI's node) and `depth` (transformers monocular depth
models from a local folder). The node classes live in `nodes.preprocessors`; nothing here knows
about the graph.
"""
