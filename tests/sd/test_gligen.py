"""GLIGEN's parts against diffusers' GatedSelfAttentionDense and GLIGENTextBoundingboxProjection, with the
weights of a tiny GLIGEN file (ComfyUI's layout) generated here; loading refuses other kinds of files."""
import pytest
import torch
from diffusers.models.attention import GatedSelfAttentionDense
from diffusers.models.embeddings import GLIGENTextBoundingboxProjection
from safetensors.torch import load_file, save_file

from nodes.sd.errors import ModelLoadError
from nodes.sd.gligen import MAX_OBJECTS, fourier_features, load_gligen
from nodes.sd.tiny_adapters import make_tiny_gligen

ATOL = 1e-5


@pytest.fixture(scope="module")
def gligen_file(tmp_path_factory):
    return make_tiny_gligen(tmp_path_factory.mktemp("gligen") / "tiny-gligen.safetensors", seed=1)


def under(sd: dict, prefix: str) -> dict:
    """The tensors below `prefix`, prefix removed (diffusers' fuser uses the same names as the file)."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def test_fusers_equal_diffusers_gated_self_attention(gligen_file):
    model = load_gligen(gligen_file, device="cpu", dtype=torch.float32)
    sd = load_file(str(gligen_file))
    prefix = "input_blocks.4.1.transformer_blocks.0.fuser."
    reference = GatedSelfAttentionDense(query_dim=64, context_dim=32, n_heads=8, d_head=8).eval()
    reference.load_state_dict(under(sd, prefix), strict=True)
    x, objs = torch.randn(2, 16, 64), torch.randn(2, MAX_OBJECTS, 32)
    index = 2  # input blocks 1, 2 come first
    with torch.no_grad():
        torch.testing.assert_close(model.fuse(x, objs, index), reference(x, objs), atol=ATOL, rtol=0)
        assert (reference(x, objs) - x).abs().mean() > 0.05  # the gates are open: the fuser acts


def test_box_tokens_equal_diffusers_position_net(gligen_file):
    model = load_gligen(gligen_file, device="cpu", dtype=torch.float32)
    position = under(load_file(str(gligen_file)), "position_net.")
    reference = GLIGENTextBoundingboxProjection(positive_len=32, out_dim=32).eval()
    reference.linears = torch.nn.Sequential(torch.nn.Linear(32 + 64, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                                            torch.nn.SiLU(), torch.nn.Linear(64, 32))  # the tiny file's hidden width
    reference.load_state_dict(position, strict=True)
    phrases = [torch.randn(1, 32), torch.randn(32)]
    boxes = [(phrases[0], 4, 8, 0, 0), (phrases[1], 2, 2, 6, 4)]  # (embedding, h, w, y, x) in latent pixels
    ours = model.objects((3, 4, 8, 16), boxes, "cpu")
    coords = torch.zeros(3, MAX_OBJECTS, 4)
    coords[:, 0] = torch.tensor([0 / 16, 0 / 8, 8 / 16, 4 / 8])
    coords[:, 1] = torch.tensor([4 / 16, 6 / 8, 6 / 16, 8 / 8])
    masks = torch.zeros(3, MAX_OBJECTS)
    masks[:, :2] = 1
    embeddings = torch.zeros(3, MAX_OBJECTS, 32)
    embeddings[:, 0], embeddings[:, 1] = phrases[0][0], phrases[1]
    with torch.no_grad():
        expected = reference(coords, masks, positive_embeddings=embeddings)
    assert ours.shape == (3, MAX_OBJECTS, 32)
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


def test_fourier_features_by_hand():
    box = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])
    feats = fourier_features(box)
    assert feats.shape == (1, 1, 64)
    f1 = 100 ** (1 / 8)
    torch.testing.assert_close(feats[0, 0, :8], torch.cat([box[0, 0].sin(), box[0, 0].cos()]))
    torch.testing.assert_close(feats[0, 0, 8:12], (f1 * box[0, 0]).sin())


def test_too_many_boxes_and_wrong_files_are_refused(gligen_file, tmp_path):
    model = load_gligen(gligen_file, device="cpu")
    with pytest.raises(ValueError, match="at most 30 boxes"):
        model.objects((1, 4, 8, 8), [(torch.zeros(32), 1, 1, 0, 0)] * 31, "cpu")
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2), "lora_unet_x.lora_down.weight": torch.zeros(2, 2)},
              str(tmp_path / "lora.safetensors"))
    with pytest.raises(ModelLoadError, match=r"lora\.safetensors.*not a GLIGEN model.*LoRA"):
        load_gligen(tmp_path / "lora.safetensors", device="cpu")
    sd = load_file(str(gligen_file))
    sd["input_blocks.1.1.transformer_blocks.0.fuser.linear.weight"] = torch.zeros(5, 5)
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ModelLoadError, match="GLIGEN fuser 0 weight.*wrong shape"):
        load_gligen(tmp_path / "bad.safetensors", device="cpu")
