"""The kit's own small vision-language model, the Hugging Face way: one model, one file.

    pictures (B, 3, 100, 150)
      -> ConvVisionEncoder: four stride-2 stages, one token per cell of the 7x10 map, plus a
         learned position                                   (B, 70, 128)
      -> connector: Linear, GELU, Linear into the decoder's width   (B, 70, 128)
      -> placed before the text's embeddings, then a small Llama decoder (LlamaForCausalLM)
         predicts the text                                  (B, 70 + T, vocab)

It lives inside transformers (`save_pretrained`, `from_pretrained`, peft's LoRA), with a
word-level tokenizer built by `tokenizers` from the kit's vocabulary. `BaseVLM`
(homework/base_vlm.py) loads it; `pretraining/base_vlm.py` made the committed weights.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

IMAGE_SIZE = (100, 150)  # (height, width) of the kart pictures
PROMPT_END = "answer :"  # the prompt is "<image tokens> question answer :" and the answer follows
DESCRIBE_PROMPT = "describe the scene ."  # the base's pretraining prompt

# ----------------------------------------------------------------------------------------
# Tokenizer: word level, from the kit's own vocabulary
# ----------------------------------------------------------------------------------------

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def kit_vocabulary() -> list[str]:
    """Every word the kit's questions, answers, captions and descriptions use, sorted."""
    from generate_qa import TEMPLATES
    from homework.data import NUMBER_WORDS
    from homework.generate_captions import CAPTIONS
    from worlds.kart import KARTS, TRACKS

    text = " ".join(TEMPLATES.values()) + " " + " ".join(CAPTIONS.values())
    text += f" {PROMPT_END} {DESCRIBE_PROMPT} ego track karts front back left right and scene"
    words = set(re.findall(r"\w+|[^\w\s]+", text.lower().replace("{kart}", " ").replace("{n}", " ").replace("{track}", " ")))
    words |= set(KARTS) | set(TRACKS) | {str(i) for i in range(21)}
    # Answers are digits; the base knows the number words up to ten too (the committed base was built so).
    words |= {"yes", "no"} | {word for word, digits in NUMBER_WORDS.items() if int(digits) <= 10}
    return sorted(words)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the kit's vocabulary (lower case, words and punctuation)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + kit_vocabulary())}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]", unk_token="[UNK]")



# ----------------------------------------------------------------------------------------
# The model: convolutional vision encoder -> connector -> Llama decoder
# ----------------------------------------------------------------------------------------

class KartVLMConfig(PretrainedConfig):
    """Configuration of the kit's small VLM.

    Args:
        image_size: (height, width) of input pictures.
        vision_channels: channels of the four stride-2 stages of the vision encoder.
        text_config: a LlamaConfig dict for the decoder.
    """

    model_type = "kart_vlm"

    def __init__(self, image_size=IMAGE_SIZE, vision_channels=(24, 48, 96, 128), text_config: dict | None = None,
                 **kwargs):
        self.image_size = list(image_size)
        self.vision_channels = list(vision_channels)
        self.text_config = text_config or {}
        super().__init__(**kwargs)



def conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(8, cout), nn.GELU())


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(conv_block(c, c, 1), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.GroupNorm(8, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x + self.body(x))


class ConvVisionEncoder(nn.Module):
    """Four stride-2 stages (100x150 -> 7x10), then one token per cell with a learned position.

    The first stage is a single cheap convolution, so no heavy work runs at full resolution."""

    def __init__(self, config: KartVLMConfig):
        super().__init__()
        c1, c2, c3, c4 = config.vision_channels
        self.stages = nn.Sequential(
            conv_block(3, c1, 2),  # (B, c1, 50, 75)
            conv_block(c1, c2, 2),  # (B, c2, 25, 38)
            conv_block(c2, c3, 2), ResidualBlock(c3),  # (B, c3, 13, 19)
            conv_block(c3, c4, 2), ResidualBlock(c4),  # (B, c4, 7, 10)
        )
        h, w = config.image_size
        for _ in range(4):
            h, w = (h + 1) // 2, (w + 1) // 2
        self.grid = (h, w)
        self.position = nn.Parameter(torch.zeros(1, h * w, c4))

    def forward(self, pixel_values: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, 3, H, W) pictures -> (B, h*w, C) tokens. With `start` > 0, the input is instead the
        activation entering block `start` of `stages` (fine-tuning caches the frozen blocks' output)."""
        x = self.stages[start:](pixel_values)  # (B, C, h, w)
        if tuple(x.shape[-2:]) != self.grid:
            raise ValueError(f"pictures must be {tuple(self.grid)} cells after the encoder, got {tuple(x.shape[-2:])}; "
                             f"resize them to {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]}")
        return x.flatten(2).transpose(1, 2) + self.position  # (B, h*w, C)


class KartVLMForConditionalGeneration(PreTrainedModel):
    """Image tokens from the vision encoder, projected into the decoder's embedding space and
    placed before the text; the decoder predicts the text."""

    config_class = KartVLMConfig
    base_model_prefix = "kart_vlm"
    _no_split_modules = ["LlamaDecoderLayer"]

    def __init__(self, config: KartVLMConfig):
        super().__init__(config)
        self.vision = ConvVisionEncoder(config)
        text_config = LlamaConfig(**config.text_config)
        self.connector = nn.Sequential(nn.Linear(config.vision_channels[-1], text_config.hidden_size), nn.GELU(),
                                       nn.Linear(text_config.hidden_size, text_config.hidden_size))
        self.language_model = LlamaForCausalLM(text_config)
        self.num_image_tokens = self.vision.grid[0] * self.vision.grid[1]
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ConvVisionEncoder):
            nn.init.normal_(module.position, std=0.02)
        elif hasattr(module, "weight") and module.__class__.__name__.endswith("RMSNorm"):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pictures -> (B, N, D) image tokens in the decoder's embedding space."""
        return self.connector(self.vision(pixel_values))

    def embed(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pictures and (B, T) token ids -> (B, N + T, D) input embeddings."""
        return self.join(self.image_tokens(pixel_values), input_ids)

    def join(self, image_tokens: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, N, D) image tokens before the (B, T) text's embeddings -> (B, N + T, D)."""
        text = self.get_input_embeddings()(input_ids)  # (B, T, D)
        if image_tokens.shape[1] != self.num_image_tokens or image_tokens.shape[2] != text.shape[2]:
            raise ValueError(f"expected image tokens of shape (B, {self.num_image_tokens}, {text.shape[2]}), "
                             f"got {tuple(image_tokens.shape)}")
        return torch.cat([image_tokens.to(text.dtype), text], dim=1)

    def forward(self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                vision_features: torch.Tensor | None = None, **kwargs):
        """Pass `pixel_values`, or the vision encoder's output `vision_features` computed earlier
        (fine-tuning with a frozen vision encoder computes them once). `attention_mask` and
        `labels` cover the text only; the image tokens are always attended to and never predicted."""
        if vision_features is None:
            vision_features = self.vision(pixel_values)
        image_tokens = self.connector(vision_features.to(self.vision.position.dtype))  # (B, N, D)
        b, n = input_ids.shape[0], self.num_image_tokens
        embeds = self.join(image_tokens, input_ids)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
        if labels is not None:
            labels = torch.cat([labels.new_full((b, n), -100), labels], dim=1)
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)


def tiny_config(vocab_size: int) -> KartVLMConfig:
    """The default base's architecture (about 1.3M parameters)."""
    text = LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=192,
                       bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=False)
    return KartVLMConfig(text_config=text.to_dict())

