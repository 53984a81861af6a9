"""CLIPTextEncoder / CLIP on a tiny random text model (width 32, 2 layers, full vocabulary), checked against
transformers' own forward pass and ComfyUI's formulas computed here.

Tolerance: 1e-5 absolute (float32; our batch holds several sequences where the reference runs one).
"""
import contextlib
import logging

import pytest
import safetensors.torch
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from nodes.sd.clip import CLIP, CLIPLoadError, detect_text_config, load_clip_from_state_dict

START, END = 49406, 49407
WIDTH, LAYERS = 32, 2
ATOL = 1e-5


def tiny_config():
    # One head: heads are not visible in the weights, and the loader assumes width // 64 (at least 1).
    return CLIPTextConfig(vocab_size=49408, hidden_size=WIDTH, intermediate_size=37, num_hidden_layers=LAYERS,
                          num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu")


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    model = CLIPTextModel(tiny_config()).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-trivial layer norms too, so a missing final norm shows
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def state_dict(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "clip.safetensors"
    safetensors.torch.save_file(reference.state_dict(), str(path))
    sd = safetensors.torch.load_file(str(path))
    # What real checkpoints carry besides the weights: slightly-off float position ids, logit_scale.
    sd["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.float32)[None] + 1e-4
    sd["logit_scale"] = torch.tensor(4.6052)
    return sd


@pytest.fixture
def embeddings_dir(tmp_path):
    return tmp_path / "embeddings"


@pytest.fixture
def clip(state_dict, embeddings_dir):
    embeddings_dir.mkdir()
    return load_clip_from_state_dict(state_dict, embeddings_dir=embeddings_dir)


def padded(tokens):
    return tokens + [END] * (77 - len(tokens))


def run(model, ids, **kwargs):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), **kwargs)


def test_config_is_read_from_shapes():
    meta = lambda *shape: torch.empty(*shape, device="meta")  # noqa: E731 — SD1.5 shapes, no memory
    sd = {"text_model.embeddings.token_embedding.weight": meta(49408, 768),
          "text_model.embeddings.position_embedding.weight": meta(77, 768),
          **{f"text_model.encoder.layers.{i}.mlp.fc1.weight": meta(3072, 768) for i in range(12)}}
    config = detect_text_config(sd)
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.max_position_embeddings, config.hidden_act) == (
        49408, 768, 12, 12, 3072, 77, "quick_gelu")


def test_parameter_names_are_the_checkpoint_keys(clip, reference):
    assert set(dict(clip.text_model.named_parameters())) == set(dict(reference.named_parameters()))


def test_unweighted_prompt_equals_transformers_forward(clip, reference):
    cond, pooled = clip.encode("a photo of a cat")
    out = run(reference, padded([START, 320, 1125, 539, 320, 2368, END]))
    assert cond.shape == (1, 77, WIDTH) and pooled.shape == (1, WIDTH)
    assert cond.dtype == torch.float32 and not cond.is_inference()
    torch.testing.assert_close(cond, out.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(pooled, out.pooler_output, atol=ATOL, rtol=0)


def test_clip_skip_2_is_the_previous_layer_through_the_final_norm(clip, reference):
    skipped = clip.clone()
    skipped.set_layer(-2)
    cond, pooled = skipped.encode("a photo of a cat")
    out = run(reference, padded([START, 320, 1125, 539, 320, 2368, END]), output_hidden_states=True)
    assert len(out.hidden_states) == LAYERS + 1  # embeddings, layer 1, layer 2
    expected = torch.nn.functional.layer_norm(out.hidden_states[-2], (WIDTH,),
                                              reference.text_model.final_layer_norm.weight,
                                              reference.text_model.final_layer_norm.bias, eps=1e-5)
    torch.testing.assert_close(cond, expected, atol=ATOL, rtol=0)
    assert (cond - out.last_hidden_state).abs().max() > 0.1
    torch.testing.assert_close(pooled, out.pooler_output, atol=ATOL, rtol=0)  # pooled is always the last layer
    assert clip.layer_idx == -1  # the original is untouched


def test_clip_skip_deeper_than_the_model_uses_the_last_layer(clip):
    deep = clip.clone()
    deep.set_layer(-3)
    torch.testing.assert_close(deep.encode("a cat")[0], clip.encode("a cat")[0], atol=0, rtol=0)
    with pytest.raises(ValueError):
        deep.set_layer(0)


def test_weighted_tokens_interpolate_from_the_empty_prompt(clip, reference):
    cond, _ = clip.encode("(cat:1.5) (dog:0.5) bird")
    ids = padded([START, 2368, 1929, 3329, END])
    z = run(reference, ids).last_hidden_state[0]
    z_empty = run(reference, padded([START, END])).last_hidden_state[0]
    weights = torch.ones(77, 1)
    weights[1], weights[2] = 1.5, 0.5
    expected = (z - z_empty) * weights + z_empty
    torch.testing.assert_close(cond[0], expected, atol=ATOL, rtol=0)
    assert (cond[0, 1] - z[1]).abs().max() > 1e-3  # the weight did something


def test_150_token_prompt_gives_two_chunks(clip, reference):
    cond, pooled = clip.encode("cat " * 150)
    assert cond.shape == (1, 154, WIDTH)
    one_chunk = run(reference, [START] + [2368] * 75 + [END])
    torch.testing.assert_close(cond[:, 77:], one_chunk.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(pooled, one_chunk.pooler_output, atol=ATOL, rtol=0)


def test_textual_inversion_vectors_fill_their_token_slots(clip, reference, embeddings_dir):
    vectors = torch.randn(2, WIDTH)
    (embeddings_dir / "styles").mkdir()
    torch.save({"string_to_param": {"*": vectors}, "name": "mystyle", "step": 1000},
               embeddings_dir / "styles" / "mystyle.pt")  # A1111 layout, in a subfolder
    tokens = clip.tokenize("a embedding:mystyle cat")
    assert [t if isinstance(t, int) else "vec" for t, _ in tokens[0][:6]] == [START, 320, "vec", "vec", 2368, END]

    seen = {}
    hook = clip.text_model.text_model.embeddings.register_forward_hook(lambda m, i, o: seen.setdefault("x", o.clone()))
    try:
        cond, _ = clip.encode_from_tokens(tokens)
    finally:
        hook.remove()
    positions = reference.text_model.embeddings.position_embedding.weight
    torch.testing.assert_close(seen["x"][0, 2:4], vectors + positions[2:4], atol=ATOL, rtol=0)

    # Same result as a vocabulary whose spare rows 100, 101 hold the two vectors.
    patched = CLIPTextModel(tiny_config()).eval()
    patched.load_state_dict(reference.state_dict())
    with torch.no_grad():
        patched.text_model.embeddings.token_embedding.weight[100:102] = vectors
    expected = run(patched, padded([START, 320, 100, 101, 2368, END])).last_hidden_state
    torch.testing.assert_close(cond, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("filename, content", [
    ("plain.safetensors", {"anything": torch.ones(3, WIDTH)}),
    ("kohya.safetensors", {"emb_params": torch.ones(3, WIDTH)}),
    ("listed.bin", [{"a": torch.ones(3, WIDTH)}]),
])
def test_embedding_file_layouts(clip, embeddings_dir, filename, content):
    path = embeddings_dir / filename
    if filename.endswith(".safetensors"):
        safetensors.torch.save_file(content, str(path))
    else:
        torch.save(content, path)
    name = filename.split(".")[0]
    chunk = clip.tokenize(f"embedding:{name}, cat")[0]
    assert [type(t).__name__ for t, _ in chunk[1:5]] == ["Tensor"] * 3 + ["int"]
    assert chunk[4][0] == 267  # the trailing comma is kept as text (",</w>")
    assert chunk[5][0] == 2368


def test_missing_embedding_is_ignored_with_a_warning(clip, caplog):
    with caplog.at_level(logging.WARNING):
        chunk = clip.tokenize("embedding:nothere cat")[0]
    assert [t for t, _ in chunk[:3]] == [START, 2368, END]
    assert "embedding:nothere not found" in caplog.text


def test_embedding_of_the_wrong_width_is_refused_naming_the_file(clip, embeddings_dir, caplog):
    safetensors.torch.save_file({"emb": torch.ones(1, 768)}, str(embeddings_dir / "sd15only.safetensors"))
    with caplog.at_level(logging.WARNING):
        chunk = clip.tokenize("embedding:sd15only cat")[0]
    assert [t for t, _ in chunk[:3]] == [START, 2368, END]
    assert "sd15only.safetensors" in caplog.text and "768" in caplog.text


def test_embedding_names_cannot_leave_the_directory(clip, embeddings_dir, caplog):
    torch.save({"emb": torch.ones(1, WIDTH)}, embeddings_dir.parent / "outside.pt")
    with caplog.at_level(logging.WARNING):
        chunk = clip.tokenize("embedding:../outside")[0]
    assert all(isinstance(t, int) for t, _ in chunk)


def test_loading_names_missing_unexpected_and_misshapen_keys(state_dict):
    broken = dict(state_dict)
    del broken["text_model.final_layer_norm.bias"]
    broken["text_model.extra.weight"] = torch.zeros(1)
    broken["text_model.encoder.layers.1.mlp.fc2.bias"] = torch.zeros(WIDTH + 1)
    with pytest.raises(CLIPLoadError) as err:
        load_clip_from_state_dict(broken)
    message = str(err.value)
    assert "missing text_model.final_layer_norm.bias" in message
    assert "unexpected text_model.extra.weight" in message
    assert "text_model.encoder.layers.1.mlp.fc2.bias: checkpoint (33,), model (32,)" in message


def test_clone_shares_the_weights_and_keeps_its_own_settings(clip):
    other = clip.clone()
    assert isinstance(other, CLIP) and other is not clip
    assert other.text_model is clip.text_model
    assert other.patcher is None
    other.set_layer(-2)
    other.embeddings_dir = None
    assert (clip.layer_idx, clip.embeddings_dir is not None) == (-1, True)


def test_a_patched_clone_encodes_with_its_patches_and_the_original_without(clip):
    class AddToFinalNormBias:  # the smallest patcher: what a LoRA ModelPatcher does to one weight
        def __init__(self, module):
            self.module, self.original = module, module.text_model.final_layer_norm.bias.detach().clone()

        @contextlib.contextmanager
        def applied(self):
            bias = self.module.text_model.final_layer_norm.bias
            with torch.no_grad():
                bias.add_(1.0)
            try:
                yield self.module
            finally:
                with torch.no_grad():
                    bias.copy_(self.original)

    base, _ = clip.encode("a cat")
    patched = clip.clone()
    patched.patcher = AddToFinalNormBias(patched.text_model)
    torch.testing.assert_close(patched.encode("a cat")[0], base + 1.0, atol=ATOL, rtol=0)
    torch.testing.assert_close(clip.encode("a cat")[0], base, atol=0, rtol=0)
