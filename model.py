"""CLIP from scratch: a ViT image encoder and a causal text transformer.

Module and parameter names follow OpenAI's CLIP (model.py) one to one -- `conv1`,
`class_embedding`, `transformer.resblocks.{i}.attn.in_proj_weight`, `ln_final`,
`text_projection`, ... -- so published weights map onto this model by name.
Attention runs through F.scaled_dot_product_attention (flash / memory-efficient kernels
where the device has them).
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    text_width: int = 96
    text_layers: int = 2
    text_heads: int = 4
    context_length: int = 32
    vocab_size: int = 100277  # tiktoken cl100k_base, special tokens included
    embed_dim: int = 96
    activation: str = "gelu"  # "quick_gelu" for OpenAI's published weights

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
        # Pool at the end-of-text token: it has the largest id in both tokenizers
        # (cl100k_base's <|endoftext|> and CLIP's <end_of_text>), and causal attention means
        # it has seen the whole caption and nothing after it.
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return F.normalize(pooled @ self.text_projection, dim=-1)

    def forward(self, images, tokens):
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()


def load_checkpoint(path, map_location="cpu"):
    """Rebuild a CLIP from a checkpoint written by train.py; `weights_only` so it runs no code."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    model = CLIP(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model, ckpt
