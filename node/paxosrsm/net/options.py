"""A node's settings, from flags, environment variables (PAXOS_*) and a YAML file.

Precedence: flag > environment > YAML file > default. Every value is checked
here, so a bad setting stops the node at start with one clear message instead
of failing later.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..config import ClusterConfig, Role


class OptionsError(ValueError):
    """A setting that cannot work; the message says which and why."""


def parse_addr(s: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:port``)."""
    s = s.strip()
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port_s = rest.removeprefix(":")
    else:
        host, _, port_s = s.rpartition(":")
    if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise OptionsError(f"bad address {s!r}: expected host:port")
    return host, int(port_s)


def _addr_list(v: Any, name: str) -> list[tuple[str, int]]:
    if isinstance(v, str):
        v = [x for x in v.split(",") if x.strip()]
    if not isinstance(v, list):
        raise OptionsError(f"{name} must be a comma-separated list of host:port")
    return [parse_addr(str(x)) for x in v]


@dataclass
class NodeOptions:
    #: This node's id: 0..N-1 for an acceptor, N.. for a learner-only node.
    node_id: int = 0
    #: If >= 0, the id is this offset plus the ordinal at the end of the host
    #: name (a StatefulSet pod "px-acceptor-2" is ordinal 2): acceptors use 0,
    #: learners use the number of acceptors.
    ordinal_offset: int = -1
    #: Ordered acceptor addresses; index = acceptor id. UDP and TCP share the port.
    acceptors: list[tuple[str, int]] = field(default_factory=list)
    #: Learner-only nodes, ids N, N+1, ... in this order.
    learners: list[tuple[str, int]] = field(default_factory=list)
    #: HTTP addresses of all nodes in id order (for the cluster status view). Optional.
    http_peers: list[tuple[str, int]] = field(default_factory=list)
    listen: str = "0.0.0.0"
    port: int = 0  # default: the port of our own entry in acceptors/learners
    #: Clients get their own port (UDP and TCP): every node's peer port plus
    #: this offset; 0: clients share the peer port. With it, the peer port
    #: takes node traffic only and the client port client traffic only, so
    #: that a Service exposing the client port gives no path to the peer
    #: protocol (issue 12).
    client_port_offset: int = 0
    http_port: int = 8080  # 0 disables the HTTP API
    http_listen: str = "127.0.0.1"
    #: Bearer tokens for the HTTP API (net/httpauth.py); empty: anonymous,
    #: which needs a loopback --http-listen or --http-anonymous true.
    http_auth_file: str = ""
    #: Serve the HTTP API without tokens on a non-loopback address: an
    #: explicit choice (demos, test networks), never a default.
    http_anonymous: bool = False
    #: Host names the HTTP API answers to besides IP literals, localhost,
    #: this machine's name and the cluster's host names (comma-separated;
    #: "*": any). Others are refused: DNS rebinding (net/browser.py).
    http_allowed_hosts: str = ""
    #: Web origins allowed to call the API from a browser (CORS), e.g.
    #: https://dash.example.com (comma-separated). None by default.
    http_cors_origins: str = ""
    #: etcd's v3 gRPC API (issue 13; etcdapi/server.py) on this port, on
    #: --http-listen's address and under its tokens; 0 disables it.
    grpc_port: int = 0
    #: gRPC addresses of all nodes in id order (MemberList's client URLs).
    grpc_peers: list[tuple[str, int]] = field(default_factory=list)
    #: The replicated state machine, as ``module:factory`` (a callable that
    #: returns a ``paxosrsm.statemachine.StateMachine``); empty: the MVCC
    #: store (etcd's data model, ``paxosrsm.mvcc``). Every node of a cluster
    #: must run the same one.
    state_machine: str = ""
    data_dir: str = "./paxos-data"
    #: Storage engine of a NEW data directory: "log" (an append-only log with
    #: fdatasync, storage/log.py) or "sqlite" (SQLite in WAL mode). A
    #: directory in use keeps the engine it was made with.
    storage_engine: str = "log"
    #: Storage quota (etcd's --quota-backend-bytes): at this many bytes held
    #: (net/quota.py) the node raises a NOSPACE alarm through the log and
    #: the cluster takes only reads and deletes until it is back under 90%.
    quota_bytes: int = 2 << 30
    #: The alarm is also raised when the data directory's file system has
    #: less than this free (at most a tenth of its size): a disk shared with
    #: others, or a quota larger than the volume.
    quota_reserve_bytes: int = 64 << 20
    key_file: str = ""
    cluster_id: str = "paxos"
    initial_cluster_state: str = "new"
    nack: bool = True
    window: int = 64
    max_batch: int = 256
    #: A leader drops client datagrams while this many commands wait to be
    #: proposed (load shedding; clients retry). Bounds the work per loop turn.
    max_pending: int = 8192
    #: New slots a leader starts per group commit (0: up to the window).
    propose_slots: int = 2
    snapshot_interval: int = 10_000
    tick_ms: float = 10.0
    election_ticks: int = 30
    heartbeat_ticks: int = 3
    #: Resend unanswered Prepares/Accepts after this many ticks. Accepts travel
    #: over TCP sessions, so this is mostly for Prepares lost as datagrams.
    retransmit_ticks: int = 10
    max_frame: int = 64 << 20
    max_datagram: int = 60_000
    #: Take a peer's address from its authenticated traffic (a restarted pod
    #: is reachable before DNS says where). Turn off on multi-homed hosts
    #: whose outgoing address is not the one peers must use.
    learn_addresses: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    log_level: str = "INFO"
    #: "text" (default) or "json": one JSON object per line (logfmt.py).
    log_format: str = "text"

    # ------------------------------------------------------------ derived

    @property
    def n_acceptors(self) -> int:
        return len(self.acceptors)

    def addr_of(self, nid: int) -> tuple[str, int]:
        if nid < self.n_acceptors:
            return self.acceptors[nid]
        return self.learners[nid - self.n_acceptors]

    @property
    def all_addrs(self) -> list[tuple[str, int]]:
        return self.acceptors + self.learners

    def cluster_config(self) -> ClusterConfig:
        n = self.n_acceptors
        roles = {n + i: Role.LEARNER for i in range(len(self.learners))}
        # A tick of tick_ms; retransmit after ~4 ticks.
        return ClusterConfig(
            n_acceptors=n,
            roles=roles,
            nack=self.nack,
            window=self.window,
            max_batch=self.max_batch,
            snapshot_interval=self.snapshot_interval,
            election_ticks=self.election_ticks,
            heartbeat_ticks=self.heartbeat_ticks,
            retransmit_ticks=self.retransmit_ticks,
            # Accepts ride TCP sessions (delivered, or the session breaks and
            # the proposer prepares again): a resend only duplicates work.
            eager_propose=False,  # batch by group commit (NodeServer._flusher)
            propose_slots_per_call=self.propose_slots,
            accept_retransmit_ticks=max(self.retransmit_ticks, int(1000 / self.tick_ms)),
            max_queue=100_000,
            catchup_batch=2048,
        )

    def validate(self) -> None:
        if self.ordinal_offset >= 0:
            import socket

            host = socket.gethostname()
            m = re.search(r"-(\d+)$", host)
            if m is None:
                raise OptionsError(
                    f"--ordinal-offset needs a host name ending in -<ordinal>, got {host!r}"
                )
            self.node_id = self.ordinal_offset + int(m.group(1))
        n = self.n_acceptors
        if n < 1:
            raise OptionsError("--acceptors must list at least one host:port")
        if n % 2 == 0:
            raise OptionsError(f"--acceptors lists {n} addresses; the count must be odd (2f+1)")
        total = n + len(self.learners)
        if not 0 <= self.node_id < total:
            raise OptionsError(
                f"--node-id {self.node_id} is not in 0..{total - 1} "
                f"({n} acceptors, {len(self.learners)} learners)"
            )
        if self.storage_engine not in ("log", "sqlite"):
            raise OptionsError("--storage-engine must be log or sqlite")
        if self.initial_cluster_state not in ("new", "existing"):
            raise OptionsError("--initial-cluster-state must be 'new' or 'existing'")
        if not self.key_file:
            raise OptionsError("--key-file is required (the cluster's HMAC key)")
        if self.tick_ms <= 0 or self.tick_ms > 1000:
            raise OptionsError("--tick-ms must be in (0, 1000]")
        if not 1024 <= self.max_datagram <= 65_000:
            raise OptionsError("--max-datagram must be in 1024..65000")
        if self.quota_bytes < 1 << 20:
            raise OptionsError("--quota-bytes must be at least 1 MiB")
        if self.quota_reserve_bytes < 0:
            raise OptionsError("--quota-reserve-bytes must not be negative")
        if self.max_frame < 1 << 20:
            raise OptionsError("--max-frame must be at least 1 MiB")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise OptionsError("--tls-cert and --tls-key go together")
        if (
            self.http_port
            and not self.http_auth_file
            and not self.http_anonymous
            and self.http_listen not in LOOPBACK
        ):
            raise OptionsError(
                f"--http-listen {self.http_listen} without --http-auth-file would let anyone "
                "who reaches it read and write every key: give --http-auth-file, listen on "
                "127.0.0.1, or say --http-anonymous true"
            )
        if self.log_format not in ("text", "json"):
            raise OptionsError(f"--log-format must be text or json, not {self.log_format!r}")
        if self.state_machine and not re.fullmatch(r"[\w.]+:[\w.]+", self.state_machine):
            raise OptionsError("--state-machine must be module:factory")
        if self.grpc_port and self.state_machine:
            raise OptionsError("--grpc-port serves the MVCC store: not with --state-machine")
        if self.grpc_port and not self.http_port:
            raise OptionsError("--grpc-port needs the HTTP API (its tokens guard gRPC too)")
        if self.grpc_peers and len(self.grpc_peers) != total:
            raise OptionsError(f"--grpc-peers must list {total} addresses, one per node")
        if self.http_peers and len(self.http_peers) != total:
            raise OptionsError(f"--http-peers must list {total} addresses, one per node")
        try:
            self.cluster_config()
        except ValueError as e:
            raise OptionsError(str(e)) from e
        if self.port == 0:
            self.port = self.addr_of(self.node_id)[1]
        if not 0 <= self.port + self.client_port_offset <= 65535:
            raise OptionsError("--client-port-offset puts the client port outside 0..65535")

    @property
    def client_port(self) -> int:
        """This node's client port; 0 when clients share the peer port."""
        return self.port + self.client_port_offset if self.client_port_offset else 0

    def client_addresses(self) -> list[tuple[str, int]]:
        """Where clients send: every acceptor's client port."""
        return [(h, p + self.client_port_offset) for h, p in self.acceptors]


_LISTS = {"acceptors", "learners", "http_peers", "grpc_peers"}
#: Listen addresses that only this machine reaches.
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _coerce(name: str, typ: Any, v: Any) -> Any:
    if name in _LISTS:
        return _addr_list(v, name)
    t = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if t == "bool":
            if isinstance(v, bool):
                return v
            s = str(v).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(v)
        if t == "int":
            if isinstance(v, bool):
                raise ValueError(v)
            return int(v)
        if t == "float":
            return float(v)
        return str(v)
    except (TypeError, ValueError) as e:
        raise OptionsError(f"{name}: cannot use {v!r} as {t}") from e


def add_arguments(p: argparse.ArgumentParser) -> None:
    for f in fields(NodeOptions):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, dest=f.name, default=None, help=f"(env PAXOS_{f.name.upper()})")
    p.add_argument("--config", default=None, help="YAML file with any of these settings")


def from_sources(
    ns: argparse.Namespace | None = None, env: dict[str, str] | None = None
) -> NodeOptions:
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    cfg_path = getattr(ns, "config", None) or env.get("PAXOS_CONFIG")
    if cfg_path:
        try:
            data = yaml.safe_load(Path(cfg_path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise OptionsError(f"cannot read config file {cfg_path}: {e}") from e
        if not isinstance(data, dict):
            raise OptionsError(f"config file {cfg_path} must hold a mapping")
        for k, v in data.items():
            values[str(k).replace("-", "_")] = v
    known = {f.name: f for f in fields(NodeOptions)}
    unknown = set(values) - set(known)
    if unknown:
        raise OptionsError(f"unknown settings in config file: {', '.join(sorted(unknown))}")
    for name in known:
        ev = env.get(f"PAXOS_{name.upper()}")
        if ev is not None:
            values[name] = ev
        if ns is not None and getattr(ns, name, None) is not None:
            values[name] = getattr(ns, name)
    opts = NodeOptions()
    for name, v in values.items():
        setattr(opts, name, _coerce(name, known[name].type, v))
    opts.validate()
    return opts
