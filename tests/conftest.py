"""Test-wide settings: no network, quiet logs, deterministic CPU threads."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")

# One torch thread: the tests use tiny models, and on a shared 2-core machine two intra-op threads
# mostly wait for each other (measured: the SD tests ran ~5x faster). Numerics stay deterministic.
try:
    import torch
except ModuleNotFoundError:  # the engine's own tests also run without torch
    torch = None
if torch is not None:
    torch.set_num_threads(1)
