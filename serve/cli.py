"""``mmedge serve BUNDLE``: serve a bundle over HTTP with uvicorn.

One process by default; ``--workers N`` starts N processes sharing the listening socket, each with
its own Pipeline (and ``1/N`` of the CPU thread budget unless ``--threads`` says otherwise), with
metrics summed over all of them. The bundle is checked before anything listens, so a broken
bundle or a busy port is an ``ERROR`` line and exit code 1, not a traceback. SIGTERM or Ctrl-C
shut down gracefully: stop accepting, finish in-flight requests (up to ``--graceful-timeout``),
drain the batch queue, exit 0.

Access: on loopback (the default) anyone on this machine may call it; bound to any other address it
needs an API key (``--api-key`` or ``MMEDGE_API_KEY``) unless ``--no-auth`` says something in front
of it authenticates. Only loopback Host names are answered unless ``--allowed-host`` adds others,
and browsers on other origins are refused unless ``--cors-origin`` allows them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import asdict
from typing import Any

from mmedge.console import console, print_json
from mmedge.errors import MMEdgeError
from mmedge.runtime.pipeline import CACHE_DIR_HELP, STRICT_HELP
from mmedge.runtime.policy import PROVIDERS_HELP, parse_policy
from mmedge.serve._access import LOOPBACK_NAMES, Access, is_loopback
from mmedge.serve._budget import MiB, ServerBudget
from mmedge.serve._inputs import RequestLimits
from mmedge.serve.app import ServeOptions, app_for_bundle
from mmedge.serve.batcher import BatchPolicy

__all__ = ["configure", "run", "worker_app"]

CONFIG_ENV = "MMEDGE_SERVE_CONFIG"  # how the parent hands the configuration to --workers processes
API_KEY_ENV = "MMEDGE_API_KEY"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument(
        "--port", type=int, default=8000, help="TCP port; 0 picks a free one (printed) (default %(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes sharing the port (default %(default)s)"
    )
    parser.add_argument("--providers", default="auto", help=PROVIDERS_HELP)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per worker process")
    parser.add_argument("--fallback", action="store_true", help="drop unavailable providers instead of failing")
    parser.add_argument("--strict", action="store_true", help=STRICT_HELP)
    parser.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    batching = parser.add_argument_group("micro-batching")
    batching.add_argument(
        "--max-batch", type=int, default=16, help="rows merged into one pipeline call (default %(default)s)"
    )
    batching.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a request waits for company (default %(default)s)"
    )
    batching.add_argument(
        "--max-queue", type=int, default=256, help="waiting requests beyond this get 503 (default %(default)s)"
    )
    batching.add_argument(
        "--batch-threads", type=int, default=1, help="batches running at once per process (default %(default)s)"
    )
    batching.add_argument("--no-batching", action="store_true", help="one request per pipeline call")
    limits = parser.add_argument_group("request limits")
    limits.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body (default %(default)s)")
    limits.add_argument(
        "--max-items", type=int, default=64, help="most items (rows) in one request (default %(default)s)"
    )
    limits.add_argument(
        "--max-image-pixels", type=int, default=16_000_000, help="largest uploaded image (w*h) (default %(default)s)"
    )
    limits.add_argument(
        "--max-audio-seconds", type=float, default=600.0, help="longest uploaded sound file (default %(default)s)"
    )
    limits.add_argument(
        "--max-decoded-mb",
        type=float,
        default=64.0,
        help="one request's inputs once decoded, measured from headers first (default %(default)s)",
    )
    budget = parser.add_argument_group("server budget")
    budget.add_argument(
        "--max-memory-mb",
        type=float,
        default=128.0,
        help="bodies and decoded inputs held at once, per process; more get 429 (default %(default)s)",
    )
    budget.add_argument(
        "--max-concurrent",
        type=int,
        default=32,
        help="requests in progress per process; more get 429 (default %(default)s)",
    )
    budget.add_argument(
        "--body-timeout-s",
        type=float,
        default=30.0,
        help="a body must arrive within this, else 408 (default %(default)s)",
    )
    budget.add_argument(
        "--keep-alive-s", type=int, default=5, help="idle keep-alive connections close after (default %(default)s)"
    )
    access = parser.add_argument_group("access")
    access.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' (prefer the {API_KEY_ENV} environment variable: "
        "arguments are visible to other users); required when --host is not loopback",
    )
    access.add_argument(
        "--no-auth", action="store_true", help="serve a non-loopback address without an API key (a proxy authenticates)"
    )
    access.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name to answer besides localhost, 127.0.0.1, ::1 and --host ('*': any); repeatable",
    )
    access.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed to call the API (https://app.example.com); repeatable; none by default",
    )
    access.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this certificate (PEM)")
    access.add_argument("--ssl-keyfile", default=None, help="the certificate's private key (PEM)")
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="seconds to finish requests on shutdown (default %(default)s)",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--access-log", action="store_true", help="log every request (slower)")


def _options(args: argparse.Namespace) -> ServeOptions:
    policy = BatchPolicy(
        max_batch=1 if args.no_batching else args.max_batch,
        max_wait_ms=0.0 if args.no_batching else args.max_wait_ms,
        max_queue=args.max_queue,
        workers=args.batch_threads,
    )
    problems = policy.problems()
    limits = RequestLimits(
        args.max_items, args.max_image_pixels, args.max_audio_seconds, int(args.max_decoded_mb * MiB)
    )
    budget = ServerBudget(args.max_concurrent, int(args.max_memory_mb * MiB), args.body_timeout_s)
    flags = {
        "max_rows": "--max-items",
        "max_image_pixels": "--max-image-pixels",
        "max_audio_seconds": "--max-audio-seconds",
        "max_decoded_bytes": "--max-decoded-mb",
        "max_concurrent": "--max-concurrent",
        "max_memory_bytes": "--max-memory-mb",
        "body_timeout_s": "--body-timeout-s",
    }
    values = {**asdict(limits), **asdict(budget)}
    problems += [f"{flags[k]} must be positive" for k, v in values.items() if v <= 0]
    for flag, value in (("--max-body-mb", args.max_body_mb), ("--keep-alive-s", args.keep_alive_s)):
        if value <= 0:
            problems.append(f"{flag} must be positive")
    if args.workers < 1:
        problems.append("--workers must be at least 1")
    if args.max_decoded_mb + 2 * args.max_body_mb > args.max_memory_mb:
        problems.append(
            "--max-memory-mb must hold one whole request: at least --max-decoded-mb + 2 x --max-body-mb "
            f"({args.max_decoded_mb + 2 * args.max_body_mb:g})"
        )
    access = _access(args)
    problems += access.problems() + _auth_problems(args, access)
    problems += _tls_problems(args)
    if problems:
        raise MMEdgeError("invalid serve options: " + "; ".join(problems))
    return ServeOptions(
        batch=policy,
        limits=limits,
        max_body_bytes=int(args.max_body_mb * MiB),
        budget=budget,
        access=access,
    )


def _access(args: argparse.Namespace) -> Access:
    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    bind = [] if args.host in ("0.0.0.0", "::", "") else [args.host]  # a wildcard is no name a client sends
    hosts = tuple(dict.fromkeys([*LOOPBACK_NAMES, *bind, *args.allowed_host]))
    return Access(api_key=key, allowed_hosts=hosts, cors_origins=tuple(args.cors_origin))


def _tls_problems(args: argparse.Namespace) -> list[str]:
    """Load the certificate now, so a wrong file is an ERROR line before the model loads."""
    if args.ssl_certfile is None and args.ssl_keyfile is None:
        return []
    if args.ssl_certfile is None or args.ssl_keyfile is None:
        return ["--ssl-certfile and --ssl-keyfile go together"]
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
    except (OSError, ssl.SSLError) as e:
        return [f"cannot use --ssl-certfile {args.ssl_certfile} with --ssl-keyfile {args.ssl_keyfile} ({e})"]
    return []


def _auth_problems(args: argparse.Namespace, access: Access) -> list[str]:
    if access.api_key is not None and args.no_auth:
        return ["--no-auth and an API key contradict each other; drop one"]
    if access.api_key is None and not args.no_auth and not is_loopback(args.host):
        return [
            f"--host {args.host} is reachable from other machines, so the server needs an API key: set "
            f"{API_KEY_ENV} (or --api-key), or pass --no-auth if a proxy in front of it authenticates"
        ]
    return []


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP proto: asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise MMEdgeError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port (0 picks a free one) "
            "or stop the process using it"
        ) from e
    sock.set_inheritable(True)
    return sock


def _threads(args: argparse.Namespace) -> int:
    if args.threads is not None:
        return args.threads
    from mmedge.sessions import default_thread_budget

    return max(1, default_thread_budget() // (args.workers * args.batch_threads))


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    settings = {
        "bundle": args.bundle,
        "providers": parse_policy(args.providers),
        "threads": _threads(args),
        "fallback": args.fallback,
        "strict": args.strict,
        "cache_dir": args.cache_dir,
    }
    sock = _listen(args.host, args.port)  # first: a busy port fails before minutes of model loading
    try:
        if args.workers == 1:
            app: Any = app_for_bundle(
                args.bundle,
                options,
                providers=settings["providers"],
                threads=settings["threads"],
                fallback=args.fallback,
                strict=args.strict,
                cache_dir=args.cache_dir,
            )
        else:
            from mmedge.bundle import load_bundle

            load_bundle(args.bundle)  # fail here, once, rather than in every worker
            app = "mmedge.serve.cli:worker_app"
        if args.no_auth and not is_loopback(args.host):
            console.print(
                f"[bold yellow]WARNING[/] --no-auth: anyone who can reach {args.host} can run the model; "
                "make sure a proxy in front of it authenticates"
            )
        _announce(args, sock, options)
        stopped_by = _serve(app, sock, args, {**settings, "options": asdict(options)})
    finally:
        sock.close()
    console.print(f"stopped{f' by {stopped_by}' if stopped_by else ''}; in-flight requests were finished")
    return 0


def _announce(args: argparse.Namespace, sock: socket.socket, options: ServeOptions) -> None:
    """Say where the server listens (the port matters with --port 0); JSON goes out at once."""
    host, port = sock.getsockname()[:2]
    scheme = "https" if args.ssl_certfile else "http"
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    if args.json:
        shown = asdict(options)
        shown["access"]["api_key"] = "(set)" if options.access.api_key else None  # never print the key
        print_json({"url": url, "pid": os.getpid(), "workers": args.workers, "options": shown})
        sys.stdout.flush()
    console.print(f"serving {args.bundle} on {url} ({args.workers} worker(s)); API docs at {url}/docs")


def _serve(app: Any, sock: socket.socket, args: argparse.Namespace, settings: dict[str, Any]) -> str:
    """Run uvicorn until a signal; returns the signal's name ('' if it stopped by itself)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=args.graceful_timeout,
        timeout_keep_alive=args.keep_alive_s,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        lifespan="on",
    )
    received: list[str] = []
    previous = {s: signal.signal(s, lambda n, _: received.append(signal.Signals(n).name)) for s in _SIGNALS}
    try:
        if args.workers == 1:
            server = uvicorn.Server(config)
            server.run(sockets=[sock])
            if not server.started:
                raise MMEdgeError("the server failed to start; see the log above")
        else:
            _serve_workers(config, sock, settings)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return received[0] if received else ""


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _serve_workers(config: Any, sock: socket.socket, settings: dict[str, Any]) -> None:
    from uvicorn.supervisors import Multiprocess

    from mmedge.serve._metrics import MULTIPROC_ENV

    metrics_dir = tempfile.mkdtemp(prefix="mmedge-serve-metrics-")
    saved = {k: os.environ.get(k) for k in (CONFIG_ENV, MULTIPROC_ENV)}
    os.environ[CONFIG_ENV] = json.dumps(settings)
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> Any:
    """The app of one ``--workers`` process, configured by the parent through the environment."""
    settings = json.loads(os.environ[CONFIG_ENV])
    raw = settings["options"]
    access = raw["access"]
    options = ServeOptions(
        batch=BatchPolicy(**raw["batch"]),
        limits=RequestLimits(**raw["limits"]),
        max_body_bytes=raw["max_body_bytes"],
        budget=ServerBudget(**raw["budget"]),
        access=Access(access["api_key"], tuple(access["allowed_hosts"]), tuple(access["cors_origins"])),
    )
    return app_for_bundle(
        settings["bundle"],
        options,
        providers=settings["providers"],
        threads=settings["threads"],
        fallback=settings["fallback"],
        strict=settings["strict"],
        cache_dir=settings["cache_dir"],
    )
