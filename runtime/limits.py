"""Size limits on what one call may feed a Pipeline, checked before any work is done.

A bundle on a device takes data from the wild. A 40000×40000 image, an hour of 768 kHz audio, a
million-item list or a file header that claims a gigapixel image would otherwise be converted
to float arrays (4-8 bytes per element) and take the process down. Every value is measured
first — array shapes, image and sound file headers, string lengths — and refused with an
:class:`~mmedge.errors.InputError` naming the input, its size and the limit to raise if the
size was intended. Nothing is allocated for a refused value.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmedge.errors import ConfigError, InputError

__all__ = ["DEFAULT_LIMITS", "InputLimits"]

_RAISE = "if this size is intended, raise it: Pipeline(..., limits=InputLimits({field}=...))"


@dataclass(frozen=True)
class InputLimits:
    """The largest values one call accepts.

    Preprocessing holds a few float copies of the largest raw item, so peak memory of a call is
    at most about 16 bytes × ``max_elements`` (1 GiB at the default) on top of the model's own.
    The default admits a 22-megapixel RGB photo or 11 minutes of 48 kHz stereo.
    """

    max_batch: int = 4096  # items in one input's list, or the leading dim of a tensor
    max_elements: int = 2**26  # elements of one tensor, array, decoded image (H·W·C) or sound (samples·channels)
    max_text_chars: int = 1_000_000  # characters of one string

    def __post_init__(self) -> None:
        bad = [
            f"{name}={value!r}"
            for name, value in vars(self).items()
            if isinstance(value, bool) or not isinstance(value, int) or value < 1
        ]
        if bad:
            raise ConfigError(f"InputLimits values must be positive ints, found {', '.join(bad)}")

    def check_batch(self, what: str, items: int) -> None:
        """Refuse more than ``max_batch`` items."""
        if items > self.max_batch:
            raise InputError(
                f"{what}: batch of {items} items is over the limit of {self.max_batch}; split it into smaller "
                f"calls, or {_RAISE.format(field='max_batch')}"
            )

    def check_elements(self, what: str, elements: int, found: str) -> None:
        """Refuse a value of more than ``max_elements`` elements; ``found`` describes it (its shape)."""
        if elements > self.max_elements:
            raise InputError(
                f"{what}: {found} has {elements} elements, over the limit of {self.max_elements}; shrink it, "
                f"or {_RAISE.format(field='max_elements')}"
            )

    def check_text(self, what: str, chars: int) -> None:
        """Refuse a string of more than ``max_text_chars`` characters."""
        if chars > self.max_text_chars:
            raise InputError(
                f"{what}: text of {chars} characters is over the limit of {self.max_text_chars}; shorten it, "
                f"or {_RAISE.format(field='max_text_chars')}"
            )


DEFAULT_LIMITS = InputLimits()
