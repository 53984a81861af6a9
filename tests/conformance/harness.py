"""Runs ComfyUI's conformance cases (tests/conformance/data, copied from ComfyUI 0.3.64's own outputs on
the demo checkpoint; see data/README.md) through our engine and measures how far our latents and images
are from ComfyUI's.

A case is an API graph ending in `SaveLatent` (prefix `latents/<case>` for the final latent,
`latents/<case>__<stage>` for stages) and `SaveImage` (prefix `images/<case>`). The harness swaps those
two for capture nodes, so what is compared is exactly the tensor ComfyUI's node received, whatever our
own SaveLatent / SaveImage do with it.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from nodegraph import Executor, NodeRegistry, OutputCache, folders, validate_prompt
from nodegraph.contract import Hidden, Input, Node, NodeOutput, String
from nodegraph.errors import ValidationError

DATA = Path(__file__).resolve().parent / "data"
CASES = DATA / "cases"
DEMO = Path(__file__).resolve().parents[2] / "nodes" / "sd" / "demo"

# The tolerance, from data/README.md ("How to compare"): ComfyUI's own floating-point variation (thread
# count, attention kernel, batch shape, an FFT round trip) reaches 1.2e-4 of max(1, max|ref|); the
# smallest real change in the set (a 0.5 % epsilon scaling) is 6.7e-3. 5e-4 sits 4x above the first and
# 13x below the second: a kernel difference passes, a wrong algorithm does not.
REL_TOL = 5e-4


def case_names() -> list[str]:
    return sorted(p.stem for p in CASES.glob("*.json"))


def load_case(name: str) -> dict:
    return json.loads((CASES / f"{name}.json").read_text())


def relative_difference(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max(1, max |ref|), in float64; inf when the shapes differ."""
    if tuple(ours.shape) != tuple(ref.shape):
        return float("inf")
    ours, ref = ours.detach().to(torch.float64).cpu(), ref.to(torch.float64)
    return float((ours - ref).abs().max() / max(1.0, float(ref.abs().max())))


class _CaptureLatent(Node):
    """Test-only stand-in for SaveLatent: hands the latent back to the harness."""
    category = "testing"
    output_node = True
    inputs = (Input("samples", "LATENT"), String("filename_prefix", "latents/x"), Hidden("prompt", "PROMPT"))

    def run(self, samples, filename_prefix, prompt=None):
        return NodeOutput(ui={"capture": [(filename_prefix, samples["samples"])]})


class _CaptureImage(Node):
    """Test-only stand-in for SaveImage."""
    category = "testing"
    output_node = True
    inputs = (Input("images", "IMAGE"), String("filename_prefix", "images/x"), Hidden("prompt", "PROMPT"))

    def run(self, images, filename_prefix, prompt=None):
        return NodeOutput(ui={"capture": [(filename_prefix, images)]})


CAPTURES = {"SaveLatent": "_CaptureLatent", "SaveImage": "_CaptureImage"}


def capture_library(library: NodeRegistry) -> NodeRegistry:
    """The full node library plus the two capture nodes."""
    registry = NodeRegistry()
    for definition in library:
        registry.register(definition.cls, definition.name, display_name=definition.display_name,
                          python_module=definition.python_module)
    registry.register(_CaptureLatent, "_CaptureLatent")
    registry.register(_CaptureImage, "_CaptureImage")
    return registry


def conformance_layout(base: Path) -> folders.Folders:
    """A models / input layout holding exactly the files the cases name."""
    layout = folders.Folders(base)
    layout.ensure()
    for sub, name in (("checkpoints", "nodegraph-demo.safetensors"), ("loras", "nodegraph-demo-lora.safetensors"),
                      ("controlnet", "nodegraph-demo-controlnet.safetensors")):
        (layout.models[0] / sub).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO / name, layout.models[0] / sub / name)
    for image in (DATA / "inputs").iterdir():
        shutil.copyfile(image, layout.input / image.name)
    return layout


@dataclass
class CaseResult:
    name: str
    # what was compared -> relative difference ("latent", "latent__stage1", "image")
    differences: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # reference outputs our run did not produce

    @property
    def worst(self) -> float:
        return max(self.differences.values(), default=float("inf"))

    def passed(self, tolerance: float = REL_TOL) -> bool:
        return not self.missing and bool(self.differences) and self.worst <= tolerance

    def describe(self) -> str:
        parts = [f"{k}: {v:.3g}" for k, v in sorted(self.differences.items())]
        if self.missing:
            parts.append(f"not produced: {', '.join(self.missing)}")
        return f"{self.name}: " + ("; ".join(parts) or "nothing compared") + f" (tolerance {REL_TOL:g})"


def references(name: str) -> dict[str, torch.Tensor]:
    """The reference tensors of a case, keyed as CaseResult.differences."""
    refs = {}
    latent = CASES / f"{name}.latent.safetensors"
    if latent.exists():  # image-only cases (Canny, ImageScale, ...) have none
        refs["latent"] = load_file(latent)["samples"]
    for path in CASES.glob(f"{name}__*.latent.safetensors"):
        stage = path.name[len(name) + 2:-len(".latent.safetensors")]
        refs[f"latent__{stage}"] = load_file(path)["samples"]
    image = CASES / f"{name}.image.safetensors"
    if image.exists():
        refs["image"] = load_file(image)["image"]
    return refs


def run_case(name: str, library: NodeRegistry, executor: Executor) -> CaseResult:
    """Run one case (library: from `capture_library`) and compare every output it has a reference for."""
    prompt = load_case(name)
    for node in prompt.values():
        node["class_type"] = CAPTURES.get(node["class_type"], node["class_type"])
    try:
        validated = validate_prompt(prompt, library)
    except ValidationError as exc:
        raise AssertionError(f"{name}: invalid here: {exc}") from None
    result = executor.execute(validated)
    if not result.ok:
        error = result.error
        raise AssertionError(f"{name}: {error.node_type} (node {error.node_id}) failed: {error.exception_message}\n"
                             + "".join(error.traceback[-4:]))
    produced = {}
    for ui in result.outputs.values():
        for prefix, tensor in ui.get("capture", []):
            produced[_key_of(name, prefix)] = tensor
    outcome = CaseResult(name)
    for key, ref in references(name).items():
        stage = key.split("__", 1)[1] if "__" in key else None
        same_as_final = stage and _stage_same_as_final(name, stage)
        ours = produced.get(key, produced.get("latent") if same_as_final else None)
        if ours is None:
            outcome.missing.append(key)
        else:
            outcome.differences[key] = relative_difference(ours, ref)
    return outcome


def _key_of(name: str, prefix: str) -> str:
    if prefix.startswith("images/"):
        return "image"
    stage = prefix[len(f"latents/{name}"):]
    return "latent" + stage  # "" or "__<stage>"


_MANIFEST: dict | None = None


def manifest() -> dict:
    global _MANIFEST
    if _MANIFEST is None:
        _MANIFEST = json.loads((DATA / "MANIFEST.json").read_text())
    return _MANIFEST


def _stage_same_as_final(name: str, stage: str) -> bool:
    extra = manifest()["cases"].get(name, {}).get("extra_latents", {}).get(stage, {})
    return bool(extra.get("same_as_final"))


def run_one(name: str) -> CaseResult:
    """Run a case from scratch (for a shell: `python -m tests.conformance.harness NAME...`)."""
    import tempfile
    import nodes
    library = NodeRegistry()
    nodes.register_nodes(library)
    with tempfile.TemporaryDirectory() as tmp:
        previous = folders._current
        folders.use(conformance_layout(Path(tmp)))
        try:
            return run_case(name, capture_library(library), Executor(OutputCache(0)))
        finally:
            folders._current = previous


if __name__ == "__main__":
    import sys
    torch.set_num_threads(1)
    for arg in sys.argv[1:] or case_names():
        try:
            print(run_one(arg).describe())
        except AssertionError as exc:
            print(str(exc).splitlines()[0])
