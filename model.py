"""CLIP from scratch: a ViT image encoder and a causal text transformer.

Module and parameter names follow OpenAI's CLIP (model.py) one to one -- `conv1`,
`class_embedding`, `transformer.resblocks.{i}.attn.in_proj_weight`, `ln_final`,
`text_projection`, ... -- so published weights map onto this model by name.
Attention runs through F.scaled_dot_product_attention (flash / memory-efficient kernels
where the device has them).
"""

import math
import pickle
import pickletools
import re
import warnings
import zipfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from checkpoint import step_files
from errors import DataError, printable


@dataclass
class ModelConfig:
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    text_width: int = 96
    text_layers: int = 2
    text_heads: int = 4
    context_length: int = 32
    vocab_size: int = 100277  # tiktoken cl100k_base, special tokens included
    eot_token: int = 100257  # the tokenizer's end-of-text id, where the text encoder pools
    embed_dim: int = 96
    activation: str = "gelu"  # "quick_gelu" for OpenAI's published weights
    image_transform: str = "clip"  # the preprocessing the weights expect: data.image_transform(kind=...)

    def __post_init__(self):
        """Configs are also read from files: one that cannot build a CLIP stops here, in one line."""
        sizes = {field.name: getattr(self, field.name) for field in fields(self)
                 if field.type is int and field.name != "eot_token"}
        wrong = [f"{name}={value!r}" for name, value in sizes.items() if type(value) is not int or value < 1]
        if wrong:
            raise ValueError(f"sizes must be positive integers: {', '.join(wrong)}")
        if self.activation not in ("gelu", "quick_gelu"):
            raise ValueError(f"activation {self.activation!r} is neither gelu nor quick_gelu")
        if self.image_size % self.patch_size or self.vision_width % self.vision_heads \
                or self.text_width % self.text_heads:
            raise ValueError("image_size must be a multiple of patch_size, each width a multiple of its heads")
        if type(self.eot_token) is not int or not 0 <= self.eot_token < self.vocab_size:
            raise ValueError(f"eot_token {self.eot_token!r} is not a token id below vocab_size {self.vocab_size}")

    @staticmethod
    def preset(name: str) -> "ModelConfig":
        """Named sizes: `tiny` trains on a laptop CPU in minutes, `B-32` is CLIP ViT-B/32."""
        presets = {
            "tiny": ModelConfig(),
            "small": ModelConfig(image_size=64, patch_size=8, vision_width=256, vision_layers=4,
                                 vision_heads=4, text_width=256, text_layers=4, text_heads=4,
                                 context_length=64, embed_dim=256),
            "B-32": ModelConfig(image_size=224, patch_size=32, vision_width=768, vision_layers=12,
                                vision_heads=12, text_width=512, text_layers=12, text_heads=8,
                                context_length=77, embed_dim=512),
        }
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(presets)}")
        return presets[name]


class QuickGELU(nn.Module):
    """OpenAI's sigmoid approximation of GELU; their published weights were trained with it."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class MultiheadAttention(nn.Module):
    """nn.MultiheadAttention's parameter layout (packed in_proj, out_proj), SDPA inside."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        assert width % heads == 0, f"width {width} is not divisible by heads {heads}"
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, causal: bool):
        batch, length, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, activation: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        act = QuickGELU() if activation == "quick_gelu" else nn.GELU()
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", act)
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x, causal: bool):
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, activation: str, causal: bool):
        super().__init__()
        self.causal = causal
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, activation) for _ in range(layers))

    def forward(self, x):
        for block in self.resblocks:
            x = block(x, self.causal)
        return x


class VisionTransformer(nn.Module):
    """Patches -> tokens, a learned class token, pre-LN blocks; the class token is the image."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        width, scale = cfg.vision_width, cfg.vision_width ** -0.5
        num_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(num_patches + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, cfg.vision_layers, cfg.vision_heads, cfg.activation, causal=False)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, cfg.embed_dim))

    def forward(self, images):
        x = self.conv1(images).flatten(2).transpose(1, 2)  # [N, patches, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.text_width))
        self.transformer = Transformer(config.text_width, config.text_layers, config.text_heads,
                                       config.activation, causal=True)
        self.ln_final = nn.LayerNorm(config.text_width)
        self.text_projection = nn.Parameter(torch.empty(config.text_width, config.embed_dim))
        # CLIP's temperature, learned in log space; starts at 1/0.07.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._init_parameters()

    def _init_parameters(self):
        """open_clip's init: small embeddings, residual projections scaled by depth."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for transformer, width, layers in ((self.transformer, self.config.text_width, self.config.text_layers),
                                           (self.visual.transformer, self.config.vision_width,
                                            self.config.vision_layers)):
            attn_std = width ** -0.5
            proj_std = attn_std * (2 * layers) ** -0.5
            fc_std = (2 * width) ** -0.5
            for block in transformer.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=self.config.text_width ** -0.5)

    def encode_image(self, images):
        return F.normalize(self.visual(images), dim=-1)

    def encode_text(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        x = self.ln_final(self.transformer(x))
        # Pool at the (first) end-of-text token: causal attention means it has seen the whole
        # caption and nothing after it.
        end = (tokens == self.config.eot_token).int().argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), end]
        return F.normalize(pooled @ self.text_projection, dim=-1)

    def forward(self, images, tokens):
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()

    @classmethod
    def from_pretrained(cls, path, activation=None):
        """Published CLIP weights from a local file: OpenAI's TorchScript `ViT-B-32.pt`, a state dict
        in OpenAI's names, or open_clip's `open_clip_pytorch_model.bin` / `.safetensors`."""
        return cls.from_state_dict(read_weights(path), str(path), activation)

    @classmethod
    def from_state_dict(cls, state, source="state dict", activation=None):
        """Like OpenAI's build_model: the config is read off the tensor shapes, then every tensor is
        checked by name and shape. The activation is not in the weights: OpenAI's (they carry
        `input_resolution`) use QuickGELU, open_clip's GELU -- except its `-quickgelu` models, for
        which pass activation="quick_gelu"."""
        state = {key.removeprefix("module."): value
                 for key, value in named_tensors(state.get("state_dict", state), source).items()}
        openai = "input_resolution" in state
        for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):  # metadata, causal mask
            state.pop(key, None)
        model = cls(infer_config(state, activation or ("quick_gelu" if openai else "gelu"), source))
        check_state_dict(model.state_dict(), state, source)
        model.load_state_dict(state)
        return model


# ----------------------------------------------------------------------------- weights files


def read_weights(path, map_location="cpu") -> dict:
    """The dict in a weights file: torch.save'd (weights_only, so it runs no code), a TorchScript
    archive (only its state_dict is taken; none of its code runs) or .safetensors. Whatever is
    wrong with the file is one DataError line: missing, a directory, unreadable, empty, cut short
    or corrupt, a pickle that would run code, or not weights at all."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            start = file.read(8)
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory; pass the weights file in it (train.py writes DIR/ckpt.pt)") from None
    except OSError as error:
        raise DataError(f"{path}: cannot open it ({error.strerror}); check its permissions") from None
    if not start:
        raise DataError(f"{path}: file is empty; download or copy it again")
    try:
        with warnings.catch_warnings():  # torch.jit's deprecation, torch.load's pickle-protocol notice
            warnings.simplefilter("ignore")
            weights = load_weights_file(path, map_location)
    except (DataError, MemoryError):  # one line already; a file too big for this machine is not damaged
        raise
    except Exception as error:  # noqa: BLE001 -- on a damaged file, torch raises nearly any kind (test_fuzz.py)
        raise DataError(f"{path}: {what_is_wrong(path, start, error)}") from None
    if not isinstance(weights, dict):
        raise DataError(f"{path}: holds a {type(weights).__name__}, not a dict of weights; is it a checkpoint?")
    return weights


def load_weights_file(path: Path, map_location):
    """What the file holds, read by the library for its kind; their errors pass through."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise DataError(f"{path}: reading .safetensors needs `pip install safetensors`; "
                            "or pass the .bin of the same weights") from None
        return load_file(path, device=str(map_location))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/constants.pkl") for name in archive.namelist()):
                return torch.jit.load(path, map_location=map_location).state_dict()
    return torch.load(path, map_location=map_location, weights_only=True)


def what_is_wrong(path: Path, start: bytes, error: Exception) -> str:
    """Why a weights file did not load, in words, from the error and the file's first bytes."""
    if isinstance(error, pickle.UnpicklingError):  # weights_only refused it: what would it have called?
        named = re.findall(r"GLOBAL (\S+)", str(error)) or (pickled_names(path) if start.startswith(b"\x80") else [])
        code = [name for name in named if name.split(".")[0] not in ("torch", "collections", "_codecs")]
        if code:
            return (f"refused: loading it would run code ({printable(code[0])}); only tensors are read. If you "
                    "made the file, torch.save the model's state_dict() instead")
    if start.startswith(b"PK\x03\x04") and not has_zip_end(path):  # a zip archive's directory is at its end
        return "truncated: the end of its zip archive is missing; download or copy it again"
    if start.startswith((b"PK\x03\x04", b"\x80")) or path.suffix == ".safetensors":  # zip archive, pickle
        detail = (str(error).strip() or type(error).__name__).splitlines()[0].split(". ")[0]
        return f"truncated or corrupt ({detail}); download or copy it again"
    return (f"not a checkpoint: neither a zip archive (torch.save, TorchScript), nor a pickle, nor .safetensors "
            f"(it starts with {start!r}); pass the weights file itself")


def has_zip_end(path: Path) -> bool:
    """Is the directory that ends every zip archive there (a download cut short loses it)?"""
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:  # there, but damaged
        return True


def pickled_names(path: Path) -> list:
    """The functions and classes a plain pickle names (torch.save'd ones name them in the error),
    read off its opcodes: none of them runs."""
    names, strings = [], []
    try:
        for opcode, arg, _ in pickletools.genops(path.read_bytes()):
            if opcode.name in ("GLOBAL", "INST"):
                names.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL":
                names.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
    except ValueError:  # damaged: the names before the damage are all there is
        pass
    return names


def named_tensors(state, source: str) -> dict:
    """`state` if it is a state dict (names to tensors), else one line saying it is not."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise DataError(f"{source}: not a state dict (names to tensors); is it CLIP weights or a train.py checkpoint?")
    return state


def infer_config(state: dict, activation: str, source: str) -> ModelConfig:
    """ModelConfig of CLIP ViT weights from their shapes. Head counts are not in the shapes:
    CLIP's heads are 64 wide."""

    def depth(prefix):
        return sum(key.startswith(prefix) and key.endswith(".attn.in_proj_weight") for key in state)

    try:
        vision_width, _, _, patch = state["visual.conv1.weight"].shape
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vocab_size, text_width = state["token_embedding.weight"].shape
        return ModelConfig(image_size=patch * grid, patch_size=patch, vision_width=vision_width,
                           vision_layers=depth("visual.transformer."), vision_heads=vision_width // 64,
                           text_width=text_width, text_layers=depth("transformer."), text_heads=text_width // 64,
                           context_length=state["positional_embedding"].shape[0], vocab_size=vocab_size,
                           eot_token=vocab_size - 1,  # CLIP's <end_of_text> is its last id
                           embed_dim=state["text_projection"].shape[1], activation=activation)
    except KeyError as missing:
        raise DataError(f"{source}: not CLIP ViT weights: no tensor {missing}") from None
    except (ValueError, TypeError, IndexError) as error:
        raise DataError(f"{source}: not CLIP ViT weights: its shapes make no CLIP ({error})") from None


def check_state_dict(expected: dict, state: dict, source: str):
    """Every tensor present with its expected shape, or one line naming the first that differ."""
    problems = [f"missing {key}" if key not in state else f"{key} is {list(state[key].shape)}, expected "
                f"{list(tensor.shape)}" for key, tensor in expected.items()
                if key not in state or state[key].shape != tensor.shape]
    problems += [f"unexpected {key}" for key in state if key not in expected]
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise DataError(f"{source}: {len(problems)} tensors differ from the CLIP its config describes: "
                        f"{printable('; '.join(problems[:3]))}{more}")


def load_checkpoint(path, map_location="cpu", activation=None):
    """(model, checkpoint dict) from a train.py checkpoint or from published CLIP weights -- then
    the dict is {"tokenizer": "clip", "model_config": ..., "step": 0} -- so eval.py and
    train.py --init take either. `activation` overrides the recorded or assumed one. Anything wrong
    with the file is one DataError line."""
    ckpt = read_weights(path, map_location)
    if "model_config" not in ckpt:
        model = CLIP.from_state_dict(ckpt, str(path), activation)
        return model, {"tokenizer": "clip", "model_config": asdict(model.config), "step": 0}
    try:
        config = ModelConfig(**ckpt["model_config"])
    except (TypeError, ValueError) as error:  # the error may quote a key of a damaged file
        raise DataError(f"{path}: its model_config makes no CLIP ({printable(error)}); "
                        "is it a train.py checkpoint?") from None
    if ckpt.get("tokenizer", "cl100k_base") not in ("cl100k_base", "clip"):
        raise DataError(f"{path}: unknown tokenizer {ckpt['tokenizer']!r}; is it a train.py checkpoint?")
    state = named_tensors(ckpt.get("model"), str(path))
    with torch.device("meta"):  # shapes first, allocating nothing: a damaged config may ask for terabytes
        check_state_dict(CLIP(config).state_dict(), state, str(path))
    model = CLIP(replace(config, activation=activation) if activation else config)
    model.load_state_dict(state)
    return model, ckpt



def load_resume_checkpoint(out: Path, activation=None):
    """(model, checkpoint, warning or None) to resume a train.py run in folder `out` from: OUT/ckpt.pt
    or, if it does not load (cut short by a full disk or an unfinished copy), the newest kept
    OUT/ckpt_step{N}.pt that does, with a warning line saying which and why."""
    latest = out / "ckpt.pt"
    kept = step_files(out)[::-1]  # newest first
    if not latest.exists() and not kept:
        raise DataError(f"{latest}: no checkpoint to resume from; drop --resume or pick the right --out")

    def load_with_training_state(path):
        model, ckpt = load_checkpoint(path, activation=activation)
        missing = [key for key in ("step", "optimizer", "loss", "rng") if key not in ckpt]
        if missing:
            raise DataError(f"{path}: holds weights but no training state ({', '.join(missing)}); "
                            "--resume needs a train.py checkpoint; to start from these weights use --init")
        return model, ckpt

    try:
        return (*load_with_training_state(latest), None)
    except DataError as error:
        if not kept:
            raise
        problem = str(error).split("; ")[0]  # the file and what is wrong with it; what to do comes next
    names = ", ".join(p.name for p in kept)
    for step_file in kept:
        try:
            model, ckpt = load_with_training_state(step_file)
        except DataError:
            continue
        return model, ckpt, f"warning: {problem}; resuming from {step_file}, the newest of the kept {names} that reads"
    raise DataError(f"{problem}; none of the kept {names} reads either; start again without --resume")


def describe_loaded(path, config: ModelConfig, ckpt: dict, activation=None) -> str:
    """The line that reports a loaded model: its shape, and where its activation came from (the one
    setting published open_clip weights do not record; a wrong guess changes every embedding silently)."""
    if activation:
        origin = "as given"
    elif "model" in ckpt:
        origin = "recorded in the checkpoint"
    elif config.activation == "quick_gelu":
        origin = "OpenAI weights"
    else:
        origin = "assumed: open_clip weights do not record it; pass --activation quick_gelu for -quickgelu models"
    return (f"loaded {path}: ViT {config.image_size}px/{config.patch_size}, width {config.vision_width}/"
            f"{config.text_width}, layers {config.vision_layers}/{config.text_layers}, activation "
            f"{config.activation} ({origin}), image transform {config.image_transform}")
