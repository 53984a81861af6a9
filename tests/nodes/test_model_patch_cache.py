"""The engine's cache with model patches: adding FreeU to a graph re-runs only FreeU, the sampler and what
follows it; the checkpoint loader stays cached and the file is read once (loads counted); changing the
patch re-runs it; removing it serves the first run's results from the cache."""
import pytest

from nodegraph import Executor, OutputCache, validate_prompt
from nodes.default_model import DEFAULT_CHECKPOINT, ensure_default_checkpoint


def txt2img(model_source=("1", 0)):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEFAULT_CHECKPOINT}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle on a white background",
                                                         "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": list(model_source), "seed": 3, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "karras",
                                                   "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "patched"}},
    }


def with_freeu(b1=1.1):
    prompt = txt2img(model_source=("2", 0))
    prompt["2"] = {"class_type": "FreeU", "inputs": {"model": ["1", 0], "b1": b1, "b2": 1.2, "s1": 0.9, "s2": 0.2}}
    return prompt


@pytest.fixture
def load_counter(monkeypatch):
    """Counts checkpoint files actually read (a fresh process-wide model cache, so nothing is shared)."""
    import nodes.loaders as loaders
    from nodes.sd.model_cache import ModelCache

    calls = []
    real = loaders.load_checkpoint

    def counting(path, **kwargs):
        calls.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(loaders, "load_checkpoint", counting)
    monkeypatch.setattr(loaders, "MODEL_CACHE", ModelCache())
    return calls


def run(executor, prompt, library):
    result = executor.execute(validate_prompt(prompt, library))
    assert result.ok, result.error and result.error.exception_message
    return sorted(prompt[n]["class_type"] for n in result.executed)


def test_adding_freeu_reruns_only_the_sampler_and_after(layout, library, load_counter):
    ensure_default_checkpoint(layout)
    executor = Executor(OutputCache())
    first = run(executor, txt2img(), library)
    assert "CheckpointLoaderSimple" in first and len(load_counter) == 1

    assert run(executor, with_freeu(), library) == ["FreeU", "KSampler", "SaveImage", "VAEDecode"]
    assert run(executor, with_freeu(b1=1.3), library) == ["FreeU", "KSampler", "SaveImage", "VAEDecode"]
    assert run(executor, with_freeu(b1=1.3), library) == []  # nothing changed: all cached
    assert run(executor, txt2img(), library) == []  # FreeU removed: the first run's outputs are still cached
    assert len(load_counter) == 1, "the checkpoint was read again"
