"""Train, evaluate and checkpoint the reference models on the ``mmedge.data`` sets.

A deliberately small loop (AdamW, cross entropy, one-cycle learning rate) that handles the
classification sets and the caption set (teacher forcing, padding ignored). Thread count is
left to the caller (``torch.set_num_threads``). Checkpoints are plain ``state_dict`` files,
``torch.save`` or safetensors, that load with ``weights_only=True``: no pickled code.
"""

from __future__ import annotations

import inspect
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmedge.data import PAD_ID, CaptionDataset, Dataset
from mmedge.errors import CheckpointError

__all__ = [
    "CheckpointError",
    "EpochStats",
    "TrainResult",
    "evaluate",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]


@dataclass(frozen=True)
class EpochStats:
    """One training epoch."""

    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch's samples (or target tokens)
    accuracy: float  # training accuracy over the same: classes, or non-pad caption tokens
    seconds: float  # wall time of the epoch


@dataclass(frozen=True)
class TrainResult:
    """The history of a :func:`train` run."""

    history: tuple[EpochStats, ...]
    checkpoint: Path | None  # where the final weights were written, if anywhere

    @property
    def losses(self) -> tuple[float, ...]:
        return tuple(e.loss for e in self.history)

    @property
    def accuracies(self) -> tuple[float, ...]:
        return tuple(e.accuracy for e in self.history)

    @property
    def seconds(self) -> float:
        return sum(e.seconds for e in self.history)


Data = Dataset | CaptionDataset


def train(
    model: nn.Module,
    data: Data,
    *,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint: str | os.PathLike[str] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data``; leaves it in ``eval()`` mode, ready to export.

    The learning rate follows a one-cycle schedule peaking at ``lr``, which reaches high accuracy
    in the few epochs a demo can afford. ``seed`` fixes initialisation-independent randomness
    (shuffling, dropout). ``on_epoch`` is called after every epoch (progress bars, early logging).
    With ``checkpoint`` the final ``state_dict`` is written there (see :func:`save_checkpoint`).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    torch.manual_seed(seed)
    steps_per_epoch = -(-len(data) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        loss_sum, correct, count = 0.0, 0, 0
        for inputs, targets in _batches(model, data, batch_size, shuffle_seed=seed * 100_003 + epoch):
            loss, hits, n = _loss(model, data, inputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum, correct, count = loss_sum + loss.item() * n, correct + hits, count + n
        stats = EpochStats(epoch, loss_sum / max(count, 1), correct / max(count, 1), time.perf_counter() - start)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    model.eval()
    saved = None if checkpoint is None else save_checkpoint(model, checkpoint)
    return TrainResult(history=tuple(history), checkpoint=saved)


def evaluate(model: nn.Module, data: Data, *, batch_size: int = 64) -> float:
    """Accuracy of ``model`` on ``data``: of labels, or of non-pad caption tokens (teacher forced).

    Runs in eval mode without gradients and restores the model's previous mode.
    """
    was_training = model.training
    model.eval()
    correct, count = 0, 0
    try:
        with torch.inference_mode():
            for inputs, targets in _batches(model, data, batch_size, shuffle_seed=None):
                _, hits, n = _loss(model, data, inputs, targets)
                correct, count = correct + hits, count + n
    finally:
        model.train(was_training)
    return correct / max(count, 1)


def _batches(
    model: nn.Module, data: Data, batch_size: int, *, shuffle_seed: int | None
) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
    """Torch (inputs, targets) batches holding exactly the inputs ``model.forward`` takes."""
    wanted = list(inspect.signature(model.forward).parameters)
    missing = [name for name in wanted if name not in data.inputs]
    if missing:
        raise ValueError(
            f"{type(model).__name__}.forward takes {wanted} but the data has no {missing} (it has {sorted(data.inputs)}); "
            "use the dataset made for this model"
        )
    if isinstance(data, CaptionDataset):
        for arrays in data.batches(batch_size, shuffle_seed=shuffle_seed):
            tokens = torch.from_numpy(arrays["tokens"])
            yield {"image": torch.from_numpy(arrays["image"]), "tokens": tokens[:, :-1]}, tokens[:, 1:]
    else:
        for arrays, labels in data.batches(batch_size, shuffle_seed=shuffle_seed):
            yield {name: torch.from_numpy(arrays[name]) for name in wanted}, torch.from_numpy(labels)


def _loss(model: nn.Module, data: Data, inputs: Mapping[str, Tensor], targets: Tensor) -> tuple[Tensor, int, int]:
    """(mean loss, correct predictions, counted targets) of one batch."""
    logits = model(**inputs)
    if isinstance(data, CaptionDataset):
        logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        counted = targets != PAD_ID
        loss = F.cross_entropy(logits, targets, ignore_index=PAD_ID)
    else:
        counted = torch.ones_like(targets, dtype=torch.bool)
        loss = F.cross_entropy(logits, targets)
    hits = ((logits.argmax(dim=-1) == targets) & counted).sum()
    return loss, int(hits), int(counted.sum())


# ---------------------------------------------------------------------------------------------
# checkpoints


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model.state_dict()`` to ``path``: safetensors if it ends in ``.safetensors``, else ``torch.save``.

    Written to a temporary sibling and renamed, so a crash never leaves a truncated checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if _is_safetensors(path):
            _safetensors().save_file(state, str(tmp))
        else:
            torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a weights-only checkpoint into ``model`` strictly and return the model.

    The one loader of :func:`mmedge.export.load_checkpoint` (``weights_only=True`` or
    safetensors, so a checkpoint cannot run code); raises :class:`CheckpointError` naming every
    missing, unexpected or mis-shaped key.
    """
    from mmedge.export import load_checkpoint as load

    load(model, path, strict=True)
    return model


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as e:
        raise CheckpointError(
            "`.safetensors` checkpoints need the safetensors package: pip install 'mmedge[export]'"
        ) from e
    return safetensors.torch
