"""What the demo training scripts share: the architectures, seeding, the work folder, tokenising with the
project's own SD1 tokenizer (so training sees exactly the token ids inference sees), and small helpers."""
from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nodes.sd.unet import UNetConfig
from nodes.sd.vae import VAEConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "nodes" / "sd" / "demo"
WORK_DIR = ROOT / "build" / "demo-training"  # intermediate checkpoints and logs (build/ is git-ignored)

CHECKPOINT_NAME = "nodegraph-demo.safetensors"
LORA_NAME = "nodegraph-demo-lora.safetensors"
CONTROLNET_NAME = "nodegraph-demo-controlnet.safetensors"

# f = 8 (four levels), 4 latent channels. Width 96, not 32 or 64: the decoder ends in GroupNorm(32) → SiLU →
# conv_out, and a group of one channel (width 32) is an instance norm that erases each channel's mean, so
# the decoder cannot say whether a flat region is white or black, red or orange (measured: L1 stuck at the
# constant predictor's 0.55); two per group (64) keep only signs (L1 plateaued at 0.3, wrong colours);
# three per group keep a level against two references. SD1's VAE has four (128 channels).
VAE_CONFIG = VAEConfig(ch=96, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=4, embed_dim=4)
TEXT_HIDDEN = 64
TEXT_LAYERS = 2
# 64×64 images are 8×8 latents: two levels (8×8, 4×4), attention at both, as SD1 has at its upper levels.
UNET_CONFIG = UNetConfig(model_channels=64, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1),
                         transformer_depth_middle=1, context_dim=TEXT_HIDDEN, num_heads=8)
HINT_BLOCK_CHANNELS = (16, 16, 32, 32)  # three stride-2 steps: the 64×64 hint meets the 8×8 latent
LATENT_SCALE = 0.18215  # SD1's; the VAE is reparametrised so that scaled latents have unit variance

CANNY_LOW, CANNY_HIGH = 0.05, 0.1  # kornia scale; low enough that cyan on gray (a 0.07 grey step) has edges


def setup(seed: int, threads: int = 1, device: str = "auto") -> torch.device:
    """Seed everything and pick the device: "auto" is CUDA when there is one, else the CPU (the scripts are
    written for both; a GPU run is not bit-identical to a CPU run, but each is deterministic)."""
    torch.set_num_threads(threads)
    # Adam's second moments and small activations underflow to denormals, which cost x2-x3 on CPU
    torch.set_flush_denormal(True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = False  # the same convolution algorithms on every run
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = True  # deterministic, and ~8x fp32 throughput on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    return dev


def add_common_args(ap, **defaults) -> None:
    """--seed, --device, --work and --workers, the same in every script."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when available)")
    ap.add_argument("--workers", type=int, default=defaults.get("workers", min(16, os.cpu_count() or 1)),
                    help="processes that render the data set")
    ap.add_argument("--work", default=str(WORK_DIR))
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="save the state and stop after this long (rerun to resume)")


class Deadline:
    """`--max-minutes`: a stage that runs out of time saves its state and stops; rerunning resumes it
    (a lent GPU machine runs one command for at most 10 minutes)."""

    def __init__(self, minutes: float | None):
        self.end = time.time() + minutes * 60 if minutes else None

    def passed(self) -> bool:
        return self.end is not None and time.time() > self.end


class OutOfTime(Exception):
    pass


class StepBook:
    """What every training loop does after its optimiser step: the smoothed loss on the progress bar and in
    the log every 10 steps (`.item()` waits for the GPU: not every step), and the resumable state every 500
    steps, when --max-minutes runs out (the loop then ends early: a lent GPU runs one command for at most
    10 minutes; rerunning resumes) and, with `save_at_end`, after the last step."""

    def __init__(self, name: str, bar, log: Log, state_path: Path, total: int, max_minutes: float | None,
                 save_at_end: bool = False):
        self.name, self.bar, self.log, self.state_path, self.total = name, bar, log, state_path, total
        self.deadline, self.save_at_end = Deadline(max_minutes), save_at_end
        self.smoothed: float | None = None
        self.stopped_at: int | None = None

    def due(self, step: int) -> bool:
        return step % 10 == 0 or step + 1 == self.total

    def report(self, step: int, loss: torch.Tensor) -> None:
        """The smoothed loss, on the steps it is due."""
        if self.due(step):
            value = loss.item()
            self.smoothed = value if self.smoothed is None else 0.8 * self.smoothed + 0.2 * value
            self.bar.set_postfix(loss=f"{self.smoothed:.4f}")
            self.log.write(step=step, loss=value, smoothed=self.smoothed)

    def checkpoint(self, step: int, state: Callable[[], dict]) -> bool:
        """Save `state()` when due; True when the time is up and the loop must end now."""
        done = step + 1
        out_of_time = self.deadline.passed()
        if done % 500 == 0 or out_of_time or (self.save_at_end and done == self.total):
            save_state(self.state_path, **state(), step=done)
        if out_of_time and done < self.total:
            tqdm.write(f"{self.name}: --max-minutes reached at step {done} of {self.total}; finishing early")
            self.stopped_at = done
            return True
        return False


def text_config_kwargs() -> dict:
    """transformers.CLIPTextConfig arguments: the real CLIP vocabulary, 77 positions, 64-wide heads
    (one head at width 64: the loader infers heads as width // 64)."""
    return dict(vocab_size=49408, hidden_size=TEXT_HIDDEN, intermediate_size=4 * TEXT_HIDDEN,
                num_hidden_layers=TEXT_LAYERS, num_attention_heads=max(1, TEXT_HIDDEN // 64),
                max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=TEXT_HIDDEN,
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)


_TOKENIZER = None


def tokenize(captions: list[str]) -> torch.Tensor:
    """(N, 77) token ids exactly as CLIPTextEncode makes them (ComfyUI's SD1 tokenizer, END-padded)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        from nodes.sd.clip.tokenizer import SD1Tokenizer

        _TOKENIZER = SD1Tokenizer()
    rows = []
    for text in captions:
        chunks = _TOKENIZER.tokenize_with_weights(text)
        rows.append([t for t, _ in chunks[0]])
    return torch.tensor(rows, dtype=torch.long)


def sd1_alphas_cumprod() -> torch.Tensor:
    from nodes.sd.sampling.model_sampling import ModelSamplingEPS

    return ModelSamplingEPS().alphas_cumprod.clone()


def cosine_lr(step: int, total: int, base: float, warmup: int = 50, floor: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


class Log:
    """Loss history (JSON lines) next to a run's checkpoints; the model cards quote it."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.start = time.time()

    def write(self, **row) -> None:
        row["elapsed_s"] = round(time.time() - self.start, 1)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def save_state(path: Path, **state) -> None:
    """Atomic torch.save of a resumable training state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def env_info(device: torch.device | None = None) -> str:
    if device is not None and device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPUs"
    try:
        load = os.getloadavg()
        return f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load average {load[0]:.1f}"
    except OSError:
        return f"{os.cpu_count()} CPUs"
