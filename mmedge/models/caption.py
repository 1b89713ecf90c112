"""CaptionNet: a small CNN image encoder and an LSTM decoder whose state starts from the image.

The decoder exposes ``init_state`` (image feature -> LSTM state) and ``step`` (one token -> next
token logits + state) so that generation can be exported as two small graphs and run one token
at a time; ``generate_greedy`` is the PyTorch reference for that loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmedge.bundle import ImagePreprocess, TextPreprocess
from mmedge.data import BOS_ID, CAPTION_LENGTH, EOS_ID, PAD_ID, VOCAB
from mmedge.models._blocks import example_image, generator, image_preprocess, text_preprocess

__all__ = ["CaptionConfig", "CaptionDecoder", "CaptionNet", "ConvImageEncoder"]


@dataclass(frozen=True)
class CaptionConfig:
    vocab: tuple[str, ...] = VOCAB  # id -> token; 0 <pad>, 1 <unk>, 2 <bos>, 3 <eos>
    max_caption_length: int = CAPTION_LENGTH  # tokens per caption including <bos> and <eos>
    image_size: int = 64  # square image side the model is trained and exported at
    channels: tuple[int, ...] = (32, 64, 128)  # one Conv/BN/ReLU/MaxPool block per entry
    grid: int = 4  # the last feature map is average-pooled to grid x grid, keeping where things are
    feature_dim: int = 256  # image feature width
    embed_dim: int = 64  # token embedding width
    hidden: int = 256  # LSTM hidden size
    layers: int = 1  # stacked LSTM layers


class ConvImageEncoder(nn.Module):
    """Image [B, 3, H, W] -> Conv/BN/ReLU/MaxPool blocks -> grid average pool -> Linear/ReLU -> [B, feature_dim]."""

    def __init__(self, channels: tuple[int, ...], grid: int, feature_dim: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for c_in, c_out in zip((3, *channels[:-1]), channels, strict=True):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.proj = nn.Sequential(nn.Linear(channels[-1] * grid * grid, feature_dim), nn.ReLU())

    def forward(self, image: Tensor) -> Tensor:
        return self.proj(self.pool(self.blocks(image)).flatten(1))


class CaptionDecoder(nn.Module):
    """LSTM language model conditioned on an image feature through its initial state."""

    def __init__(self, vocab_size: int, feature_dim: int, embed_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.layers, self.hidden = layers, hidden
        self.init_h = nn.Linear(feature_dim, layers * hidden)
        self.init_c = nn.Linear(feature_dim, layers * hidden)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def init_state(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        """Image feature [B, feature_dim] -> LSTM (h, c), each [layers, B, hidden]."""
        h = torch.tanh(self.init_h(feature)).reshape(-1, self.layers, self.hidden).transpose(0, 1).contiguous()
        c = self.init_c(feature).reshape(-1, self.layers, self.hidden).transpose(0, 1).contiguous()
        return h, c

    def forward(self, tokens: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tokens [B, T] from state (h, c) -> (logits [B, T, vocab], h, c) after the last token."""
        out, (h, c) = self.lstm(self.embedding(tokens), (h, c))
        return self.out(out), h, c

    def step(self, tokens: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One token [B, 1] -> (next-token logits [B, vocab], h, c)."""
        logits, h, c = self(tokens, h, c)
        return logits[:, -1], h, c


class CaptionNet(nn.Module):
    """``forward(image [B, 3, H, W], tokens int64 [B, T]) -> logits [B, T, vocab]`` (teacher forcing).

    Logits at position t predict token t + 1; train on ``tokens[:, :-1]`` against ``tokens[:, 1:]``.
    """

    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

    def __init__(self, config: CaptionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CaptionConfig()
        self.vocab = config.vocab
        self.labels = config.vocab  # what each logit means
        self.preprocess: dict[str, ImagePreprocess | TextPreprocess] = {
            "image": image_preprocess(config.image_size),
            "tokens": text_preprocess(config.max_caption_length),
        }
        self.image_encoder = ConvImageEncoder(config.channels, config.grid, config.feature_dim)
        self.decoder = CaptionDecoder(
            len(config.vocab), config.feature_dim, config.embed_dim, config.hidden, config.layers
        )

    def forward(self, image: Tensor, tokens: Tensor) -> Tensor:
        h, c = self.decoder.init_state(self.image_encoder(image))
        logits, _, _ = self.decoder(tokens, h, c)
        return logits

    @torch.no_grad()
    def generate_greedy(self, image: Tensor, max_len: int) -> Tensor:
        """Greedy captions, int64 [B, L] with L <= max_len: the tokens after <bos>, up to and
        including <eos>, then <pad>. Stops early once every row has emitted <eos>. Call ``eval()`` first.
        """
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        h, c = self.decoder.init_state(self.image_encoder(image))
        token = torch.full((image.shape[0], 1), self.bos_id, dtype=torch.long, device=image.device)
        done = torch.zeros(image.shape[0], dtype=torch.bool, device=image.device)
        out = []
        for _ in range(max_len):
            logits, h, c = self.decoder.step(token, h, c)
            nxt = torch.where(done, torch.full_like(done, self.pad_id, dtype=torch.long), logits.argmax(-1))
            out.append(nxt)
            done |= nxt == self.eos_id
            if bool(done.all()):
                break
            token = nxt[:, None]
        return torch.stack(out, dim=1)

    def example_inputs(self, batch: int = 1) -> dict[str, Tensor]:
        """Reproducible random inputs of the trained shapes: tokens start with <bos>, as in training."""
        gen = generator()
        tokens = torch.randint(4, len(self.vocab), (batch, self.config.max_caption_length - 1), generator=gen)
        tokens[:, 0] = self.bos_id
        return {"image": example_image(batch, self.config.image_size, gen), "tokens": tokens}
