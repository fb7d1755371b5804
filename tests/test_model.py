"""model.py: presets, shapes, unit-norm embeddings, end-of-text pooling, checkpoints, and the one-line
error for every model file that does not load."""

import math
import os
import pickle
import random
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from errors import DataError
from model import CLIP, ModelConfig, load_checkpoint

from conftest import run_python


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
                 "visual.transformer.resblocks.0.attn.out_proj.weight",
                 "visual.transformer.resblocks.0.mlp.c_fc.weight",
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


# ----------------------------------------------------------------------------- model files that do not load
# Every way a weights file can fail is one DataError line naming the file (tests/test_fuzz.py adds
# a thousand mutations); through the command lines that is exit status 1 and no traceback.

class RunsCode:
    """Unpickling this runs a shell command that creates `marker`: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def bad_model_file(kind: str, folder: Path, good: Path) -> Path:
    path = folder / "ckpt.pt"
    if kind == "cut short":  # a download cut short
        path.write_bytes(good.read_bytes()[:5000])
    elif kind == "random bytes":
        path.write_bytes(random.Random(0).randbytes(3000))
    elif kind == "a pickle that runs code":
        path.write_bytes(pickle.dumps(RunsCode(folder / "MARKER")))
    elif kind == "torch.save'd code":
        torch.save({"model": RunsCode(folder / "MARKER")}, path)
    elif kind == "empty":
        path.touch()
    elif kind == "a directory":
        path.mkdir()
    elif kind == "a list":
        torch.save([torch.zeros(2)], path)
    return path


@pytest.mark.parametrize("kind, problem", [
    ("cut short", "truncated: the end of its zip archive is missing; download or copy it again"),
    ("random bytes", "not a checkpoint: neither a zip archive (torch.save, TorchScript), nor a pickle, nor "),
    ("a pickle that runs code", "refused: loading it would run code (posix.system)"),
    ("torch.save'd code", "refused: loading it would run code (posix.system)"),
    ("empty", "file is empty; download or copy it again"),
    ("a directory", "is a directory; pass the weights file in it"),
    ("a list", "holds a list, not a dict of weights"),
])
def test_a_model_file_that_does_not_load_is_one_line_naming_it(kind, problem, tiny_ckpt, tmp_path):
    path = bad_model_file(kind, tmp_path, tiny_ckpt)
    with pytest.raises(DataError) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(f"{path}: {problem}") and "\n" not in str(error.value)
    assert not (tmp_path / "MARKER").exists()


def test_the_crafted_pickle_would_run_its_code_if_unpickled_and_never_runs_here(tmp_path):
    payload = pickle.dumps(RunsCode(tmp_path / "MARKER"))
    pickle.loads(payload)  # what torch.load(weights_only=False) would do
    assert (tmp_path / "MARKER").exists()
    (tmp_path / "MARKER").unlink()
    (tmp_path / "ckpt.pt").write_bytes(payload)
    with pytest.raises(DataError, match="refused: loading it would run code"):
        load_checkpoint(tmp_path / "ckpt.pt")
    assert not (tmp_path / "MARKER").exists()


def test_a_file_without_read_permission_says_so(tiny_ckpt, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(tiny_ckpt.read_bytes())
    path.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: refuse the open as the system would anyone else

        def refuse(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(DataError, match=re.escape(f"{path}: cannot open it (Permission denied); check its")):
        load_checkpoint(path)


def test_a_checkpoint_whose_config_does_not_fit_its_weights_names_the_tensors(tiny, tmp_path):
    config = {**asdict(tiny.config), "text_width": 192}
    torch.save({"model_config": config, "model": tiny.state_dict()}, tmp_path / "ckpt.pt")
    with pytest.raises(DataError, match=re.escape("29 tensors differ from the CLIP its config describes: "
                                                  "positional_embedding is [32, 96], expected [32, 192]")):
        load_checkpoint(tmp_path / "ckpt.pt")


@pytest.mark.parametrize("config, problem", [
    ({"vision_heads": 5}, "each width a multiple of its heads"),
    ({"vocab_size": -3}, "sizes must be positive integers: vocab_size=-3"),
    ({"activation": "relu"}, "activation 'relu' is neither gelu nor quick_gelu"),
    ({"depth": 3}, "unexpected keyword argument 'depth'"),
])
def test_a_checkpoint_config_that_makes_no_clip_is_one_line(config, problem, tiny, tmp_path):
    torch.save({"model_config": {**asdict(tiny.config), **config}, "model": tiny.state_dict()}, tmp_path / "ckpt.pt")
    with pytest.raises(DataError, match=re.escape(problem)):
        load_checkpoint(tmp_path / "ckpt.pt")


@pytest.mark.parametrize("command", [("eval.py", "--ckpt"), ("train.py", "--device", "cpu", "--init")])
@pytest.mark.parametrize("kind", ["cut short", "random bytes", "a pickle that runs code"])
def test_the_command_lines_print_one_line_and_exit_1_for_a_bad_model_file(command, kind, tiny_ckpt, tmp_path):
    path = bad_model_file(kind, tmp_path, tiny_ckpt)
    result = run_python(*command, path, "--out", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2 and f"error: {path}: " in result.stderr
    assert not (tmp_path / "MARKER").exists()
