"""model.py: presets, shapes, unit-norm embeddings, end-of-text pooling, checkpoints."""

import math
from dataclasses import asdict

import pytest
import torch

from model import CLIP, ModelConfig, load_checkpoint


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return CLIP(ModelConfig.preset("tiny")).eval()


def test_b32_preset_has_vit_b32_sizes():
    c = ModelConfig.preset("B-32")
    assert (c.image_size, c.patch_size, c.vision_width, c.vision_layers) == (224, 32, 768, 12)
    assert (c.text_width, c.text_heads, c.text_layers, c.context_length, c.embed_dim) == (512, 8, 12, 77, 512)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="tiny, small, B-32"):
        ModelConfig.preset("huge")


def test_encoders_return_unit_rows_of_embed_dim(tiny):
    c = tiny.config
    images = torch.randn(3, 3, c.image_size, c.image_size)
    tokens = torch.randint(1, 1000, (5, c.context_length))
    tokens[:, 7] = 100257
    tokens[:, 8:] = 0
    image, text = tiny.encode_image(images), tiny.encode_text(tokens)
    assert image.shape == (3, c.embed_dim) and text.shape == (5, c.embed_dim)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(5))


def test_text_encoder_ignores_tokens_after_end_of_text(tiny):
    tokens = torch.zeros(2, tiny.config.context_length, dtype=torch.long)
    tokens[:, :4] = torch.tensor([64, 2579, 12960, 100257])  # "a red circle" <|endoftext|>
    tokens[1, 4:] = torch.randint(1, 100000, (tiny.config.context_length - 4,))
    text = tiny.encode_text(tokens)
    torch.testing.assert_close(text[0], text[1])


def test_text_is_pooled_at_the_configured_end_of_text_id_not_the_largest_id():
    """A forker's tokenizer may give end-of-text any id: pooling follows ModelConfig.eot_token."""
    torch.manual_seed(0)
    model = CLIP(ModelConfig(vocab_size=500, eot_token=3)).eval()
    tokens = torch.tensor([[10, 20, 3, 0, 0], [10, 20, 3, 499, 498]])  # larger ids after end-of-text
    text = model.encode_text(tokens)
    torch.testing.assert_close(text[0], text[1])
    assert not torch.allclose(text[0], model.encode_text(torch.tensor([[10, 3, 20, 0, 0]]))[0])


def test_shorter_token_tensors_give_the_same_embedding(tiny):
    """Batches are cut after the last end-of-text column; that must not change anything."""
    tokens = torch.zeros(1, tiny.config.context_length, dtype=torch.long)
    tokens[0, :3] = torch.tensor([64, 2579, 100257])
    torch.testing.assert_close(tiny.encode_text(tokens), tiny.encode_text(tokens[:, :3]))


def test_logit_scale_starts_at_one_over_0_07(tiny):
    assert tiny.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_parameter_names_follow_openai_clip(tiny):
    names = set(tiny.state_dict())
    for name in ["visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding",
                 "visual.ln_pre.weight", "visual.transformer.resblocks.0.attn.in_proj_weight",
                 "visual.transformer.resblocks.0.attn.out_proj.weight", "visual.transformer.resblocks.0.mlp.c_fc.weight",
                 "visual.transformer.resblocks.1.ln_2.bias", "visual.ln_post.weight", "visual.proj",
                 "token_embedding.weight", "positional_embedding", "transformer.resblocks.0.mlp.c_proj.weight",
                 "ln_final.weight", "text_projection", "logit_scale"]:
        assert name in names, name


def test_quick_gelu_activation_changes_outputs():
    torch.manual_seed(0)
    gelu = CLIP(ModelConfig.preset("tiny"))
    quick = CLIP(ModelConfig(**{**asdict(gelu.config), "activation": "quick_gelu"}))
    quick.load_state_dict(gelu.state_dict())
    images = torch.randn(2, 3, gelu.config.image_size, gelu.config.image_size)
    assert not torch.allclose(gelu.encode_image(images), quick.encode_image(images))


def test_load_checkpoint_rebuilds_the_model(tiny, tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model_config": asdict(tiny.config), "model": tiny.state_dict()}, path)
    model, ckpt = load_checkpoint(path)
    images = torch.randn(2, 3, tiny.config.image_size, tiny.config.image_size)
    torch.testing.assert_close(model.eval().encode_image(images), tiny.encode_image(images))
