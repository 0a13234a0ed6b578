"""``paxosctl``, the command line (``python -m paxosrsm.cli``): the KV and
etcd-style commands over the client library, ``local up`` for a cluster of
processes on this machine, key files, status. The code is in ``ctl``."""

from .ctl import main

__all__ = ["main"]
