"""A self-signed certificate for tests and benchmarks (``openssl req``)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(d: Path, san: str = "IP:127.0.0.1,DNS:localhost") -> list[str]:
    """Write ``node.crt`` and ``node.key`` into ``d`` (CN paxos-node, the
    subject alternative names ``san``) and return the node flags that put
    every TCP link in TLS with it as certificate and CA."""
    cert, key = d / "node.crt", d / "node.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=paxos-node", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(cert)]
