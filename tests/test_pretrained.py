"""Published CLIP weights, checked against open_clip (the reference implementation, a test-only
requirement in bench/requirements.txt). No weights can be downloaded here, so open_clip's
ViT-B-32 is built with random weights and saved in each published layout."""

import json

import pytest
import torch

from conftest import run_python
from errors import DataError
from model import CLIP, ModelConfig, load_checkpoint
from tokenizer import tokenize


# ----------------------------------------------------------------------------- weights

@pytest.fixture(scope="module")
def images_and_captions():
    torch.manual_seed(0)
    return torch.randn(2, 3, 224, 224), ["a dog on a red sofa", "a cat on a mat and no dog"]


def assert_same_embeddings(ours, reference, images, captions, open_clip):
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(images), reference.encode_image(images, normalize=True),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.encode_text(tokenize(captions, 77, "clip")),
                                   reference.encode_text(open_clip.tokenize(captions), normalize=True),
                                   atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def open_clip_b32(open_clip, tmp_path_factory):
    """open_clip's ViT-B-32 (GELU, as laion2b_s34b_b79k) and its state dict saved as a .bin."""
    torch.manual_seed(1)
    reference = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    path = tmp_path_factory.mktemp("open_clip") / "open_clip_pytorch_model.bin"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_open_clip_checkpoint_gives_open_clips_embeddings(open_clip, open_clip_b32, images_and_captions):
    reference, path = open_clip_b32
    ours = CLIP.from_pretrained(path).eval()
    assert ours.config == ModelConfig(**{**vars(ModelConfig.preset("B-32")), "vocab_size": 49408, "eot_token": 49407})
    assert_same_embeddings(ours, reference, *images_and_captions, open_clip)


def test_openai_torchscript_checkpoint_gives_open_clips_embeddings(open_clip, images_and_captions, tmp_path):
    """OpenAI's ViT-B-32.pt is a TorchScript archive in OpenAI's names (open_clip keeps them) that
    also carries input_resolution, context_length and vocab_size; its weights use QuickGELU."""
    torch.manual_seed(2)
    reference = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    for name, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        vars(reference).pop(name, None)  # open_clip keeps two of them as plain ints
        reference.register_buffer(name, torch.tensor(value))
    path = tmp_path / "ViT-B-32.pt"
    with pytest.warns(FutureWarning):  # torch.jit.script is deprecated; OpenAI's file is TorchScript anyway
        torch.jit.script(reference).save(str(path))
    model, ckpt = load_checkpoint(path)
    assert (model.config.activation, ckpt["tokenizer"], ckpt["step"]) == ("quick_gelu", "clip", 0)
    assert_same_embeddings(model.eval(), reference, *images_and_captions, open_clip)


def test_eval_scores_published_weights_end_to_end(open_clip_b32, synth_dir, tmp_path):
    out = tmp_path / "results.json"
    result = run_python("eval.py", "--bench", "synth", "--ckpt", open_clip_b32[1], "--data-root", synth_dir,
                     "--limit", "8", "--device", "cpu", "--out", out)
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["n"] == 8


# ----------------------------------------------------------------------------- mismatches

@pytest.fixture
def small_weights(tmp_path):
    """A small CLIP ViT with CLIP's 64-wide heads and vocabulary, saved as a plain state dict."""
    config = ModelConfig(image_size=32, patch_size=16, vision_width=128, vision_layers=1, vision_heads=2,
                         text_width=64, text_layers=2, text_heads=1, context_length=77, vocab_size=49408,
                         eot_token=49407, embed_dim=32)
    return config, CLIP(config).state_dict(), tmp_path / "weights.bin"


def test_config_is_inferred_from_the_shapes(small_weights):
    config, state, path = small_weights
    torch.save(state, path)
    assert CLIP.from_pretrained(path).config == config
    assert CLIP.from_pretrained(path, activation="quick_gelu").config.activation == "quick_gelu"


def test_activation_override_is_named_in_the_line_reporting_the_loaded_config(small_weights, synth_dir, tmp_path):
    """open_clip's -quickgelu state dicts do not record their activation: GELU is assumed unless told."""
    _, state, path = small_weights
    torch.save(state, path)
    assert load_checkpoint(path)[0].config.activation == "gelu"
    assert load_checkpoint(path, activation="quick_gelu")[0].config.activation == "quick_gelu"
    for flags, expected in (((), "activation gelu (assumed: open_clip weights do not record it; pass --activation "
                                 "quick_gelu"), (("--activation", "quick_gelu"), "activation quick_gelu (as given)")):
        result = run_python("eval.py", "--bench", "synth", "--ckpt", path, "--data-root", synth_dir, "--limit", "4",
                            "--device", "cpu", *flags)
        assert result.returncode == 0 and expected in result.stderr, result.stderr
    trained = run_python("train.py", "--data", synth_dir / "train.jsonl", "--init", path, "--activation", "quick_gelu",
                         "--steps", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--out", tmp_path)
    assert trained.returncode == 0 and "activation quick_gelu (as given)" in trained.stdout, trained.stderr
    assert load_checkpoint(tmp_path / "ckpt.pt")[0].config.activation == "quick_gelu"


@pytest.mark.parametrize("layout", ["open_clip training checkpoint", "safetensors"])
def test_other_file_layouts_give_the_same_weights(small_weights, layout):
    config, state, path = small_weights
    if layout == "safetensors":
        safetensors = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
        path = path.with_suffix(".safetensors")
        safetensors.save_file(state, path)
    else:  # what open_clip's training writes: DDP's "module." prefix inside "state_dict"
        torch.save({"epoch": 1, "state_dict": {f"module.{key}": value for key, value in state.items()}}, path)
    model = CLIP.from_pretrained(path)
    assert model.config == config
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())


def test_mismatched_weights_fail_with_one_line_naming_the_tensors(small_weights):
    _, state, path = small_weights
    del state["visual.ln_post.bias"]
    state["transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(250, 64)
    state["text_projection"] = torch.zeros(60, 32)
    torch.save(state, path)
    with pytest.raises(DataError) as error:
        CLIP.from_pretrained(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "transformer.resblocks.1.mlp.c_fc.weight is [250, 64], expected [256, 64]" in message
    assert "missing visual.ln_post.bias" in message and "text_projection is [60, 32]" in message


def test_weights_that_are_not_clip_say_so(tmp_path):
    path = tmp_path / "other.bin"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(DataError, match="not CLIP ViT weights: no tensor 'visual.conv1.weight'"):
        load_checkpoint(path)
