"""Tests use the package's process-cluster harness (also used by the benchmarks)."""

from paxosrsm.net.proccluster import ProcCluster, free_ports

__all__ = ["ProcCluster", "free_ports"]
