"""Break one part of the pipeline on purpose, then run the demo proofs: they must fail. This is the check
that the proofs can fail at all (a judge that passes a broken pipeline proves nothing).

    NODEGRAPH_SABOTAGE=text    python -m pytest tests/demo -p tests.demo.sabotage   # tokenizer off by one
    NODEGRAPH_SABOTAGE=sampler python -m pytest tests/demo -p tests.demo.sabotage   # UNet told the wrong noise level
    NODEGRAPH_SABOTAGE=cfg     python -m pytest tests/demo -p tests.demo.sabotage   # positive and negative swapped

Each is a bug that could really happen; training/README.md records what failed under each.
"""
from __future__ import annotations

import os


def _break_text_encoder():
    from nodes.sd.clip.tokenizer import END_TOKEN, PAD_TOKEN, START_TOKEN, SD1Tokenizer

    original = SD1Tokenizer.tokenize_with_weights

    def off_by_one(self, text, **kw):
        return [[(t if t in (START_TOKEN, END_TOKEN, PAD_TOKEN) else t + 1, w) for t, w in chunk]
                for chunk in original(self, text, **kw)]

    SD1Tokenizer.tokenize_with_weights = off_by_one


def _break_sampler():
    from nodes.sd.sampling.model_sampling import ModelSamplingEPS

    original = ModelSamplingEPS.timestep
    ModelSamplingEPS.timestep = lambda self, sigma: 999.0 - original(self, sigma)


def _break_cfg():
    from nodes.sd.sampling.cfg import CFGDenoiser

    def swapped(self, x, sigma):
        self._resolve(x)
        positive, negative = self.prepared
        cond, uncond = self.calc_cond_batch([negative, positive], x, sigma)
        return uncond + (cond - uncond) * self.cfg

    CFGDenoiser.__call__ = swapped


SABOTAGE = {"text": _break_text_encoder, "sampler": _break_sampler, "cfg": _break_cfg}


def pytest_configure(config):
    what = os.environ.get("NODEGRAPH_SABOTAGE", "")
    if what not in SABOTAGE:
        raise ValueError(f"NODEGRAPH_SABOTAGE must be one of {sorted(SABOTAGE)}, not {what!r}")
    SABOTAGE[what]()
