"""What the whole server takes on at once: requests in progress and the memory their inputs hold.

A request is admitted in two steps, and refused at the door rather than queued when the server
is full (429 with Retry-After): its body bytes are reserved as they arrive (so a stalled or slow upload holds only what
it actually sent), then its decoded size, measured from headers before anything is decoded (see
:mod:`mmedge.serve._inputs`), is reserved before decoding. Everything a request reserved is
released when its response is sent. Decoding happens in worker threads, so the ledger is locked.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["Ledger", "OverBudgetError", "ServerBudget", "Ticket"]

MiB = 2**20


@dataclass(frozen=True)
class ServerBudget:
    """Limits on the whole server's work in progress (per process with ``--workers``)."""

    max_concurrent: int = 32  # requests past their body at once (decoding, queued, running); more get 429
    max_memory_bytes: int = 128 * MiB  # bodies being read + decoded inputs of admitted requests; more get 429
    body_timeout_s: float = 30.0  # a request body must arrive whole within this; a stalled upload gets 408


class OverBudgetError(Exception):
    """The server's memory budget cannot hold this request now; the client should retry later (429)."""

    def __init__(self, wanted: int, budget: int) -> None:
        super().__init__(
            f"the server is holding its memory budget of {budget / MiB:g} MiB of queued work and cannot take "
            f"{wanted / MiB:.1f} MiB more now; retry after the Retry-After delay (server: --max-memory-mb)"
        )


class Ledger:
    """Bytes reserved and requests in progress, over the whole server."""

    def __init__(self, budget: ServerBudget) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self.reserved = 0
        self.active = 0

    def reserve(self, n: int) -> None:
        """Take ``n`` bytes of the memory budget, or raise :class:`OverBudgetError` (taking nothing)."""
        with self._lock:
            if self.reserved + n > self.budget.max_memory_bytes:
                raise OverBudgetError(n, self.budget.max_memory_bytes)
            self.reserved += n

    def release(self, n: int) -> None:
        with self._lock:
            self.reserved -= n

    def enter(self) -> bool:
        """Start one request, unless ``max_concurrent`` are already in progress."""
        with self._lock:
            if self.active >= self.budget.max_concurrent:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


class Ticket:
    """One request's reservations, all released by :meth:`close` when the request ends."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.held = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> None:
        self.ledger.reserve(n)
        with self._lock:
            self.held += n

    def close(self) -> None:
        with self._lock:
            held, self.held = self.held, 0
        self.ledger.release(held)
