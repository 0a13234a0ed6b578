"""``paxosrsm-node``: run one node (any of proposer, acceptor, learner) as a process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..statemachine import StateMachine
from ..storage import StorageError
from . import logfmt
from .options import NodeOptions, OptionsError, add_arguments, from_sources
from .runtime import NodeServer

EXIT_CONFIG = 2
EXIT_STORAGE = 3
EXIT_FATAL = 70
#: A stop (SIGTERM, SIGINT, a fatal error) that has not finished after this
#: many seconds ends the process at once. That is a crash, which the node
#: survives by design (every record is fsynced before what depends on it is
#: sent), and it keeps a stop inside Kubernetes' grace period (10 s).
STOP_DEADLINE = 6.0


def _stop_watchdog(node_id: int, deadline: float) -> threading.Timer:
    def expire() -> None:
        logging.getLogger("paxosrsm.node").error(
            "node %d: stop not finished after %.0f s; exiting now", node_id, deadline
        )
        logging.shutdown()
        os._exit(EXIT_FATAL)

    t = threading.Timer(deadline, expire)
    t.daemon = True
    t.start()
    return t


def load_factory(spec: str) -> Callable[[], StateMachine]:
    """``module:factory`` -> the factory (``--state-machine``)."""
    mod, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"--state-machine {spec}: {attr} is not callable")
    f: Callable[[], StateMachine] = obj
    return f


async def run(opts: NodeOptions) -> int:
    try:
        factory = load_factory(opts.state_machine) if opts.state_machine else None
        server = NodeServer(opts) if factory is None else NodeServer(opts, sm_factory=factory)
    except (OSError, ValueError, ImportError, AttributeError) as e:
        # the key file (missing, unreadable, too short), or --state-machine
        print(f"paxosrsm-node: {e}", file=sys.stderr)
        return EXIT_CONFIG
    http = None
    try:
        await server.start()
    except StorageError as e:
        logging.getLogger("paxosrsm.node").critical("%s", e)
        await server.stop()
        return EXIT_STORAGE
    if opts.http_port:
        from .http import HttpApi
        from .httpauth import AuthFileError

        try:
            http = HttpApi(server)
        except AuthFileError as e:
            print(f"paxosrsm-node: {e}", file=sys.stderr)
            await server.stop()
            return EXIT_CONFIG
    etcd = None
    if http is not None and not opts.state_machine:
        # etcd's v3 API: the JSON gateway on the HTTP port, and gRPC on
        # --grpc-port (the MVCC store's API: not with a state machine of one's own).
        from ..etcdapi.gateway import Gateway
        from ..etcdapi.server import EtcdApi

        etcd = EtcdApi(server, http)
        http.app.add_routes(Gateway(etcd).routes())
    if http is not None:
        await http.start()
    if etcd is not None:
        etcd.start_background()
    if etcd is not None and opts.grpc_port:
        try:
            await etcd.start(opts.http_listen, opts.grpc_port)
        except RuntimeError as e:  # grpc: the port is taken
            print(f"paxosrsm-node: gRPC on port {opts.grpc_port}: {e}", file=sys.stderr)
            assert http is not None
            await http.stop()
            await server.stop()
            return EXIT_CONFIG
    loop = asyncio.get_running_loop()
    # SIGUSR1 prints every thread's stack to stderr (the node's log): how a
    # hung node is diagnosed without stopping it (the Jepsen harness does it
    # when a node stops answering).
    with contextlib.suppress(AttributeError, ValueError, RuntimeError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, server.stopping.set)
    code = 0
    try:
        await server.wait()
    except BaseException:  # the fatal error was logged where it happened
        code = EXIT_FATAL
    finally:
        t0 = loop.time()
        watchdog = _stop_watchdog(opts.node_id, STOP_DEADLINE)
        try:
            if etcd is not None:
                await etcd.stop()
            if http is not None:
                await http.stop()
            await server.stop()
        finally:
            watchdog.cancel()
    logging.getLogger("paxosrsm.node").info(
        "node %d stopped in %.2f s", opts.node_id, loop.time() - t0
    )
    return code


def version() -> str:
    """The package version (installed metadata, or the image's PAXOSRSM_VERSION)."""
    import os
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _v

    try:
        return _v("paxosrsm")
    except PackageNotFoundError:
        return os.environ.get("PAXOSRSM_VERSION", "unknown")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="paxosrsm-node",
        description="Run one Paxos node. Settings: flags > PAXOS_* env > --config YAML.",
    )
    add_arguments(p)
    p.add_argument("--version", action="version", version=f"paxosrsm-node {version()}")
    ns = p.parse_args(argv)
    try:
        opts = from_sources(ns)
    except OptionsError as e:
        print(f"paxosrsm-node: {e}", file=sys.stderr)
        return EXIT_CONFIG
    logfmt.configure(opts.log_level, opts.log_format, opts.node_id)
    try:
        import uvloop

        uvloop.install()  # the fast event loop (a dependency on Linux)
    except ImportError:  # pragma: no cover
        pass
    try:
        return int(asyncio.run(run(opts)))
    except OSError as e:  # e.g. the port is taken
        print(f"paxosrsm-node: {e}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
