"""A Python process driven over a pipe: one JSON line per command, one JSON line per reply.

Why: a measurement that must not share a process with what it is compared against (bench's
variants, quantize's one-graph check) runs each contender in a fresh ``python -m module``. The
coordinator writes the first line (the configuration) and then commands on the worker's stdin and
reads replies from its stdout; the worker moves library output written to stdout onto stderr so it
cannot corrupt the protocol, and stderr goes to a file whose tail is shown if the worker dies.
A failure inside the worker comes back as ``{"error": text, "type": name}`` and is raised here as
that :mod:`mmedge.errors` type. Workers ignore the terminal's Ctrl-C (they run in a session of
their own): the coordinator decides when to stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import mmedge.errors
from mmedge.errors import MMEdgeError

__all__ = ["STDERR_TAIL", "WorkerProcess", "error_reply", "raise_reply_error", "serve_lines"]

State = TypeVar("State")
STDERR_TAIL = 2000  # characters of a crashed worker's stderr shown in the error


class WorkerProcess:
    """``python -m module argv`` (``python``: another interpreter) started with ``config`` as its first line.

    ``ready`` is its reply to the configuration; ``what`` names it in errors ("the benchmark process
    of variant 'x'"). ``scratch`` is where its stderr is kept (the system's temporary directory if None).
    """

    def __init__(
        self,
        module: str,
        config: Mapping[str, Any],
        *,
        what: str,
        python: str | None = None,
        argv: Sequence[str] = (),
        scratch: Path | None = None,
    ) -> None:
        self.what = what
        self._stderr: IO[str] = tempfile.TemporaryFile("w+", dir=scratch, encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._pending = False
        try:
            self._proc = subprocess.Popen(
                [python or sys.executable, "-m", module, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                bufsize=1,
                start_new_session=True,  # the terminal's Ctrl-C goes to the coordinator only
            )
        except OSError as e:
            self._stderr.close()
            raise MMEdgeError(f"{what} could not start: {python or sys.executable}: {e.strerror or e}") from e
        try:
            self.ready = self._exchange(config)
        except BaseException:
            self.close()
            raise

    def request(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Send ``command`` and return the reply; the reply's error raised as its mmedge.errors type."""
        if self._pending:  # a reply left unread by an interruption
            self._reply()
        return self._exchange(command)

    def close(self) -> None:
        """Ask the worker to exit (kill it if it does not within 10 s) and release the pipes."""
        with contextlib.suppress(OSError, ValueError):
            self._proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
            self._proc.stdin.flush()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._stderr):
            with contextlib.suppress(OSError):
                stream.close()

    def _exchange(self, message: Mapping[str, Any]) -> dict[str, Any]:
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except OSError as e:
            raise self._crashed() from e
        self._pending = True
        reply = self._reply()
        raise_reply_error(reply, self.what)
        return reply

    def _reply(self) -> dict[str, Any]:
        line = self._proc.stdout.readline()
        self._pending = False
        if not line:
            raise self._crashed()
        return json.loads(line)

    def _crashed(self) -> MMEdgeError:
        code = self._proc.wait()
        self._stderr.seek(0)
        tail = self._stderr.read()[-STDERR_TAIL:].strip()
        return MMEdgeError(f"{self.what} exited with code {code}:\n{tail}")


def serve_lines(
    start: Callable[[Mapping[str, Any]], tuple[State, Mapping[str, Any]]],
    dispatch: Callable[[State, Mapping[str, Any]], Mapping[str, Any]],
) -> int:
    """The worker's side: ``start(config)`` → (state, ready reply), then ``dispatch(state, command)``
    per command until ``{"cmd": "exit"}`` or end of input; returns the process exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    config = json.loads(sys.stdin.readline())
    try:
        state, ready = start(config)
    except Exception as e:  # noqa: BLE001 - every failure must reach the coordinator as a message
        _send(out, error_reply(e))
        return 1
    _send(out, ready)
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("cmd") == "exit":
            break
        try:
            _send(out, dispatch(state, command))
        except Exception as e:  # noqa: BLE001
            _send(out, error_reply(e))
    return 0


def error_reply(e: BaseException) -> dict[str, Any]:
    """A failure as the coordinator raises it again: mmedge errors keep their type and message."""
    kind = type(e).__name__ if isinstance(e, MMEdgeError) else "MMEdgeError"
    text = str(e) if isinstance(e, MMEdgeError) else f"{type(e).__name__}: {e}"
    return {"error": text, "type": kind}


def raise_reply_error(reply: Mapping[str, Any], what: str) -> None:
    """Raise a worker's error reply (:func:`error_reply`) as its :mod:`mmedge.errors` type, prefixed by ``what``."""
    if "error" not in reply:
        return
    kind = getattr(mmedge.errors, reply.get("type", ""), MMEdgeError)
    kind = kind if isinstance(kind, type) and issubclass(kind, MMEdgeError) else MMEdgeError
    raise kind(f"{what}: {reply['error']}")


def _send(out: IO[str], message: Mapping[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()
