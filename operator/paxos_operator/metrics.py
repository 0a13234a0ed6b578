"""The operator's own Prometheus metrics (port 8000, /metrics): what the
nodes cannot know, such as when each scheduled backup last succeeded. The
chart's PrometheusRule alerts on them (PaxosBackupOverdue)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from prometheus_client import Gauge, start_http_server

PORT = int(os.environ.get("PAXOS_OPERATOR_METRICS_PORT", "8000"))
_LABELS = ["namespace", "paxosrsm_cluster", "schedule"]

LAST_SUCCESS = Gauge(
    "paxos_operator_backup_last_success_timestamp_seconds",
    "When the PaxosBackup last succeeded (Unix seconds; 0: never)",
    _LABELS,
)
MAX_AGE = Gauge(
    "paxos_operator_backup_max_age_seconds",
    "Age after which a scheduled PaxosBackup is overdue (twice its longest gap between runs)",
    _LABELS,
)
BACKUPS = Gauge(
    "paxos_operator_backup_files",
    "Backup files a PaxosBackup keeps (its status list)",
    _LABELS,
)
_started = False


def start() -> None:
    global _started
    if not _started and PORT:
        start_http_server(PORT)
        _started = True


def _ts(text: str | None) -> float:
    if not text:
        return 0.0
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def backup_state(
    ns: str, cluster: str, name: str, status: dict[str, Any], max_age: float | None
) -> None:
    LAST_SUCCESS.labels(ns, cluster, name).set(_ts(status.get("lastSuccessTime")))
    BACKUPS.labels(ns, cluster, name).set(len(status.get("backups") or []))
    if max_age is not None:
        MAX_AGE.labels(ns, cluster, name).set(max_age)


def forget_backup(ns: str, name: str) -> None:
    for g in (LAST_SUCCESS, MAX_AGE, BACKUPS):
        for labels in list(g._metrics):
            if labels[0] == ns and labels[2] == name:
                g.remove(*labels)
