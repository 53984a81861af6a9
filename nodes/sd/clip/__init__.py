"""SD1.x CLIP text side: tokenizer with ComfyUI's prompt syntax, text encoder, and the CLIP socket object."""
from .clip import CLIP, load_clip_from_state_dict
from .prompt_weights import parse_prompt_weights
from .text_encoder import CLIPLoadError, CLIPTextEncoder, build_text_model, detect_text_config
from .tokenizer import CHUNK_LENGTH, END_TOKEN, PAD_TOKEN, START_TOKEN, SD1Tokenizer, pack_chunks

__all__ = [
    "CLIP", "load_clip_from_state_dict", "parse_prompt_weights", "CLIPLoadError", "CLIPTextEncoder",
    "build_text_model", "detect_text_config", "SD1Tokenizer", "pack_chunks",
    "CHUNK_LENGTH", "START_TOKEN", "END_TOKEN", "PAD_TOKEN",
]
