"""The zoo's rows: multimodal models as users write them, built in code with random weights.

A row combines 2–3 encoders of different modalities (``_zoo_encoders``) with a fusion head and
one of the ``forward`` forms users write: positional arguments, keyword-only arguments,
``**batch`` dict in / dict out, an encoder shared by two inputs, glue code between an input and
its encoder, an encoder taking (ids, mask). ``ROWS`` lists them; ``build(row)`` returns the model
and its example inputs (batch 1), ``samples(row, n, seed)`` generated inputs for calibration.
``tests/test_zoo.py`` imports this file, so it must stay importable without running anything.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _zoo_encoders import (
    SAMPLE_RATE,
    VOCAB,
    Fusion,
    Pick,
    aud_conv1d,
    aud_gru_frames,
    aud_hf,
    aud_mel,
    img_small,
    img_torchvision,
    txt_bag,
    txt_hf,
    txt_minilm,
    txt_rnn,
    txt_transformer,
)
from torch import nn

CLASSES = 10
HIDDEN = 64
TOKENS = 32
Part = tuple[nn.Module, Pick]


class ZooNet(nn.Module):
    """Encoders as direct children ``<modality>_encoder``, per-modality projection, fusion, head."""

    def __init__(self, parts: Mapping[str, Part], fusion: str, *, embedding: bool = False) -> None:
        super().__init__()
        self.order = list(parts)
        self.picks = {m: p[1] for m, p in parts.items()}
        for m, (enc, _) in parts.items():
            self.add_module(f"{m}_encoder", enc)
        self.proj = nn.ModuleDict({m: nn.LazyLinear(HIDDEN) for m in parts})
        self.late = fusion == "late"
        self.embedding = embedding
        if self.late:
            self.heads = nn.ModuleDict({m: nn.Linear(HIDDEN, CLASSES) for m in parts})
        else:
            self.fusion = Fusion(fusion, len(parts), HIDDEN)
            self.classifier = nn.Linear(HIDDEN, CLASSES)

    def fuse(self, outs: Mapping[str, Any]) -> Any:
        feats = [self.proj[m](self.picks[m](outs[m])) for m in self.order]
        if self.late:
            return torch.stack([self.heads[m](f) for m, f in zip(self.order, feats, strict=True)]).mean(0)
        fused = self.fusion(feats)
        if self.embedding:  # named so the manifest calls it an embedding (compared by cosine, not top-1)
            return {"embedding": nn.functional.normalize(fused, dim=-1)}
        return self.classifier(fused)


class ImageText(ZooNet):
    def forward(self, image: torch.Tensor, text: torch.Tensor) -> Any:
        return self.fuse({"image": self.image_encoder(image), "text": self.text_encoder(text)})


class ImageAudio(ZooNet):
    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> Any:
        return self.fuse({"image": self.image_encoder(image), "audio": self.audio_encoder(audio)})


class TextAudio(ZooNet):
    def forward(self, text: torch.Tensor, audio: torch.Tensor) -> Any:
        return self.fuse({"text": self.text_encoder(text), "audio": self.audio_encoder(audio)})


class Tri(ZooNet):
    def forward(self, image: torch.Tensor, text: torch.Tensor, audio: torch.Tensor) -> Any:
        outs = {"image": self.image_encoder(image), "text": self.text_encoder(text)}
        return self.fuse({**outs, "audio": self.audio_encoder(audio)})


class ImageHFText(ZooNet):
    """The text encoder takes two inputs: ids and attention mask."""

    def forward(self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.fuse({"image": self.image_encoder(image), "text": self.text_encoder(input_ids, attention_mask)})


class HFTextAudio(ZooNet):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, audio: torch.Tensor) -> Any:
        return self.fuse({"text": self.text_encoder(input_ids, attention_mask), "audio": self.audio_encoder(audio)})


class TriHF(ZooNet):
    def forward(
        self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, audio: torch.Tensor
    ) -> Any:
        outs = {"image": self.image_encoder(image), "text": self.text_encoder(input_ids, attention_mask)}
        return self.fuse({**outs, "audio": self.audio_encoder(audio)})


class KeywordOnly(ZooNet):
    def forward(self, *, image: torch.Tensor, text: torch.Tensor, audio: torch.Tensor) -> Any:
        outs = {"image": self.image_encoder(image), "text": self.text_encoder(text)}
        return self.fuse({**outs, "audio": self.audio_encoder(audio)})


class DictIO(ZooNet):
    """``forward(**batch)`` with a dict of outputs: class logits and the fused embedding."""

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = {m: getattr(self, f"{m}_encoder")(batch[m]) for m in self.order}
        feats = [self.proj[m](self.picks[m](outs[m])) for m in self.order]
        fused = self.fusion(feats)
        return {"logits": self.classifier(fused), "embedding": nn.functional.normalize(fused, dim=-1)}


class SharedImage(ZooNet):
    """One image encoder applied to two photos (e.g. before/after), plus text."""

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor, text: torch.Tensor) -> Any:
        a, b = self.image_encoder(image_a), self.image_encoder(image_b)
        return self.fuse({"image": a - b, "text": self.text_encoder(text)})


class GlueUnsqueeze(ZooNet):
    """Glue between raw input and encoder: ``audio.unsqueeze(1)`` for a Conv1d encoder."""

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> Any:
        return self.fuse({"image": self.image_encoder(image), "audio": self.audio_encoder(audio.unsqueeze(1))})


class GlueScale(ZooNet):
    """Glue: images arrive in [0, 1] and are mapped to [-1, 1] in ``forward``."""

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> Any:
        return self.fuse({"image": self.image_encoder(image * 2 - 1), "text": self.text_encoder(text)})


@dataclass(frozen=True)
class Row:
    """One zoo model: how to build it and what it exercises."""

    name: str
    net: type[ZooNet]
    parts: Mapping[str, Callable[[], Part]]  # modality -> encoder factory
    fusion: str  # concat | tanh | gated | film | xattn | late
    covers: str  # what the row exercises, for the table
    image: int = 64  # image side
    embedding: bool = False  # output a normalised embedding (cosine metric) instead of logits
    export: Mapping[str, Any] = field(default_factory=dict)  # extra export_model options
    audio: str = "wave"  # wave (B, 16000) | frames (B, 100, 40) | logmel (B, 16, 100)
    # Example batch. nn.TransformerEncoder exports only from batch >= 2: from batch 1 dynamo fixes the
    # batch (0/1 specialisation) and TorchScript bakes batch * heads into the attention's Reshape.
    batch: int = 1
    # encoders=None: let export detect the split. The shared-encoder row needs it: naming the shared
    # module as an encoder raises ExportError ("called 2 times ... export the shared module as part of the head").
    auto_split: bool = False


def _tv(arch: str) -> Callable[[], Part]:
    return lambda: img_torchvision(arch)


def _rnn(cell: str, bi: bool) -> Callable[[], Part]:
    return lambda: txt_rnn(cell, bi)


def _hf(family: str) -> Callable[[], Part]:
    return lambda: txt_hf(family)


def _ahf(family: str) -> Callable[[], Part]:
    return lambda: aud_hf(family)


def _mel(kind: str) -> Callable[[], Part]:
    return lambda: aud_mel(kind)


# Whisper's encoder refuses any other number of mel frames than 2 * max_source_positions: declaring the
# log-mel input "other" keeps only its batch dynamic (the export error's advice, dynamic=False, fixes batch too).
_FIXED_MEL = {"modalities": {"audio": "other"}}
# (B, frames, 40) filterbanks: "audio" makes the last axis dynamic (samples); the frames axis is axis 1,
# which only the "text" modality (seq on axis 1) declares.
_FRAMES = {"modalities": {"audio": "text"}}

ROWS: tuple[Row, ...] = (
    Row("r18_lstm_mel_concat", Tri, {"image": _tv("resnet18"), "text": _rnn("lstm", False), "audio": _mel("mel")}, "concat", "ResNet-18 224², LSTM tuple, MelSpectrogram", image=224),
    Row("r50_bilstm_gated", ImageText, {"image": _tv("resnet50"), "text": _rnn("lstm", True)}, "gated", "ResNet-50, bi-LSTM"),
    Row("mbv3_gru_mfcc_tanh", Tri, {"image": _tv("mobilenet_v3_small"), "text": _rnn("gru", False), "audio": _mel("mfcc")}, "tanh", "MobileNetV3-S 224², GRU, MFCC", image=224),
    Row("effb0_bigru_film", ImageText, {"image": _tv("efficientnet_b0"), "text": _rnn("gru", True)}, "film", "EfficientNet-B0, bi-GRU, FiLM"),
    Row("convnext_bert_xattn", ImageHFText, {"image": _tv("convnext_tiny"), "text": _hf("bert")}, "xattn", "ConvNeXt-T, BERT (ids+mask), cross-attn"),
    Row("regnet_distilbert_mel_late", TriHF, {"image": _tv("regnet_y_400mf"), "text": _hf("distilbert"), "audio": _mel("mel")}, "late", "RegNetY-400MF, DistilBERT, mel, late avg"),
    Row("vit_roberta_gated", ImageHFText, {"image": _tv("vit"), "text": _hf("roberta")}, "gated", "ViT (2 layers), RoBERTa"),
    Row("swin_clip_embed", ImageHFText, {"image": _tv("swin_t"), "text": _hf("clip")}, "concat", "Swin-T, CLIP text, embedding out", embedding=True),
    Row("cnn_t5_wav2vec2_concat", TriHF, {"image": img_small, "text": _hf("t5"), "audio": _ahf("wav2vec2")}, "concat", "T5 encoder, wav2vec2 raw wave"),
    Row("transformer_hubert_tanh", TextAudio, {"text": txt_transformer, "audio": _ahf("hubert")}, "tanh", "nn.TransformerEncoder, HuBERT"),
    Row("whisper_bag_concat", TextAudio, {"text": txt_bag, "audio": _ahf("whisper")}, "concat", "EmbeddingBag, Whisper enc (log-mel, 100 frames fixed)", audio="logmel", export=_FIXED_MEL),
    Row("r18_bag_film", ImageText, {"image": _tv("resnet18"), "text": txt_bag}, "film", "ResNet-18, EmbeddingBag, FiLM"),
    Row("kwonly_cnn_lstm_mel", KeywordOnly, {"image": img_small, "text": _rnn("lstm", False), "audio": _mel("mel")}, "concat", "keyword-only forward"),
    Row("dictio_r18_bigru_mfcc", DictIO, {"image": _tv("resnet18"), "text": _rnn("gru", True), "audio": _mel("mfcc")}, "gated", "forward(**batch) → dict (logits+embedding)"),
    Row("shared_r18_lstm", SharedImage, {"image": _tv("resnet18"), "text": _rnn("lstm", False)}, "concat", "one encoder, two image inputs (auto split)", auto_split=True),
    Row("glue_unsqueeze_conv1d", GlueUnsqueeze, {"image": img_small, "audio": aud_conv1d}, "concat", "glue: audio.unsqueeze(1) → Conv1d"),
    Row("glue_scale_bigru", GlueScale, {"image": _tv("mobilenet_v3_small"), "text": _rnn("gru", True)}, "tanh", "glue: image*2-1, bi-GRU"),
    Row("vit_rawgru_frames_gated", ImageAudio, {"image": _tv("vit"), "audio": aud_gru_frames}, "gated", "raw nn.GRU (bi) on float frames", audio="frames", export=_FRAMES),
    Row("mbv3_mel_late", ImageAudio, {"image": _tv("mobilenet_v3_small"), "audio": _mel("mel")}, "late", "MobileNetV3-S, mel, late avg"),
    Row("effb0_wav2vec2_xattn", ImageAudio, {"image": _tv("efficientnet_b0"), "audio": _ahf("wav2vec2")}, "xattn", "EfficientNet-B0, wav2vec2, cross-attn"),
    Row("bert_mel_gated", HFTextAudio, {"text": _hf("bert"), "audio": _mel("mel")}, "gated", "BERT (ids+mask), mel"),
    Row("t5_mfcc_film", HFTextAudio, {"text": _hf("t5"), "audio": _mel("mfcc")}, "film", "T5 encoder, MFCC, FiLM"),
    Row("convnext_bilstm_mfcc_concat", Tri, {"image": _tv("convnext_tiny"), "text": _rnn("lstm", True), "audio": _mel("mfcc")}, "concat", "ConvNeXt-T, bi-LSTM, MFCC"),
    Row("regnet_transformer_hubert_xattn", Tri, {"image": _tv("regnet_y_400mf"), "text": txt_transformer, "audio": _ahf("hubert")}, "xattn", "RegNetY, TransformerEncoder, HuBERT; batch-2 example", batch=2),
    Row("swin_gru_whisper_tanh", Tri, {"image": _tv("swin_t"), "text": _rnn("gru", False), "audio": _ahf("whisper")}, "tanh", "Swin-T, GRU, Whisper enc (100 frames fixed)", audio="logmel", export=_FIXED_MEL),
    Row("r50_distilbert_embed", ImageHFText, {"image": _tv("resnet50"), "text": _hf("distilbert")}, "concat", "ResNet-50, DistilBERT, embedding out", embedding=True),
    Row("cnn_lstm_mel_convfrontend", Tri, {"image": img_small, "text": _rnn("lstm", False), "audio": _mel("mel")}, "concat", "audio_frontend='conv' (STFT-free mel)", export={"audio_frontend": "conv"}),
    Row("minilm_real_mbv3_embed", ImageHFText, {"image": _tv("mobilenet_v3_small"), "text": txt_minilm}, "concat", "real all-MiniLM-L6-v2 weights (registry package), MobileNetV3-S, embedding out", embedding=True),
)  # fmt: skip
BY_NAME = {r.name: r for r in ROWS}


def samples(row: Row, n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``n`` generated batch-1 inputs of 10 classes (class = index % 10); ``labels`` gives the classes.

    Every modality carries the class, as in a real data set: images have a class colour, texts
    draw half their tokens from a class range of the vocabulary, audio is a class tone plus noise.
    """
    g = torch.Generator().manual_seed(seed)
    names = _input_names(row)
    return [{name: _one(row, name, i % CLASSES, g) for name in names} for i in range(n)]


def labels(n: int) -> list[int]:
    return [i % CLASSES for i in range(n)]


def _input_names(row: Row) -> list[str]:
    import inspect

    params = [p for p in inspect.signature(row.net.forward).parameters if p != "self"]
    if params == ["batch"]:  # forward(**batch): the modalities are the keys
        return list(row.parts)
    return params


def _one(row: Row, name: str, c: int, g: torch.Generator) -> torch.Tensor:
    if name.startswith("image"):
        colour = torch.tensor([(c % 3) / 2, (c // 3 % 3) / 2, c / 9]).view(1, 3, 1, 1)
        return 0.5 * torch.rand(1, 3, row.image, row.image, generator=g) + 0.5 * colour
    if name in ("text", "input_ids"):
        ids = torch.randint(0, VOCAB, (1, TOKENS), generator=g)
        ids[:, ::2] = c * (VOCAB // CLASSES) + torch.randint(0, 4, (1, (TOKENS + 1) // 2), generator=g)
        return ids
    if name == "attention_mask":
        keep = int(torch.randint(TOKENS // 2, TOKENS + 1, (1,), generator=g))
        return (torch.arange(TOKENS) < keep).long().unsqueeze(0)
    if row.audio == "frames":
        x = torch.randn(1, 100, 40, generator=g)
        x[..., 4 * c : 4 * c + 4] += 2
        return x
    if row.audio == "logmel":
        x = torch.randn(1, 16, 100, generator=g)
        x[:, c] += 2
        return x
    return 0.1 * _tone(c) + 0.05 * torch.randn(1, SAMPLE_RATE, generator=g)


@functools.cache
def _tone(c: int) -> torch.Tensor:
    return torch.sin(2 * torch.pi * 200 * (c + 1) * torch.arange(SAMPLE_RATE) / SAMPLE_RATE)


def _batches(items: list[dict[str, torch.Tensor]], size: int) -> list[dict[str, torch.Tensor]]:
    return [{k: torch.cat([x[k] for x in items[i : i + size]]) for k in items[0]} for i in range(0, len(items), size)]


def train(model: ZooNet, row: Row, steps: int) -> None:
    """A few Adam steps of the head on generated samples: logits get a trained model's margins, not near-ties.

    The encoders are frozen (a linear probe: no backward through them, which keeps a row's build
    cheap on 2 cores) but run in train mode, so their batch norms see the data. Embedding rows have
    no labels: only the batch norms adapt.
    """
    size = 8
    items = samples(row, steps * size, seed=7)
    y = torch.tensor(labels(steps * size))
    encoders = [p for n, p in model.named_parameters() if n.split(".")[0].endswith("_encoder")]
    for p in encoders:
        p.requires_grad_(False)
    head = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(head, lr=3e-2)
    model.train()
    for i, batch in enumerate(_batches(items, size)):
        if row.embedding:
            with torch.no_grad():
                model(**batch)
            continue
        out = model(**batch)
        logits = out["logits"] if isinstance(out, dict) else out
        loss = nn.functional.cross_entropy(logits, y[i * size : (i + 1) * size])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in encoders:
        p.requires_grad_(True)
    model.eval()


def build(row: Row, seed: int = 0, train_steps: int = 20) -> tuple[ZooNet, dict[str, torch.Tensor]]:
    """The model, trained ``train_steps`` steps, in eval mode, and its example inputs (batch 1)."""
    torch.manual_seed(seed)
    model = row.net({m: make() for m, make in row.parts.items()}, row.fusion, embedding=row.embedding).eval()
    example = _batches(samples(row, row.batch, seed=seed + 1), row.batch)[0]
    with torch.no_grad():
        model(**example)  # sizes the lazy projections
    if train_steps:
        train(model, row, train_steps)
    return model, example
