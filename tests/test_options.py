"""The node's settings: flags > PAXOS_* environment > YAML file > defaults, all checked."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from paxosrsm.net.options import OptionsError, add_arguments, from_sources, parse_addr


def _ns(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture
def keyfile(tmp_path: Path) -> str:
    k = tmp_path / "key"
    k.write_text("0123456789abcdef0123456789abcdef\n")
    return str(k)


def test_precedence_flag_over_env_over_yaml(tmp_path: Path, keyfile: str) -> None:
    cfg = tmp_path / "node.yaml"
    cfg.write_text(
        "acceptors: [a:1, b:2, c:3]\nnode-id: 2\nwindow: 8\nnack: false\n"
        f"key_file: {keyfile}\nsnapshot_interval: 500\n"
    )
    env = {"PAXOS_WINDOW": "16", "PAXOS_MAX_BATCH": "7"}
    o = from_sources(_ns("--config", str(cfg), "--max-batch", "9"), env)
    assert o.acceptors == [("a", 1), ("b", 2), ("c", 3)]
    assert o.node_id == 2 and o.port == 3  # our own entry's port by default
    assert o.window == 16  # env beats the file
    assert o.max_batch == 9  # a flag beats env
    assert o.nack is False and o.snapshot_interval == 500
    cc = o.cluster_config()
    assert cc.n_acceptors == 3 and cc.window == 16 and not cc.eager_propose


def test_learners_get_ids_after_the_acceptors(keyfile: str) -> None:
    o = from_sources(
        _ns(
            "--acceptors", "h:1", "--learners", "l1:5,l2:6", "--node-id", "2", "--key-file", keyfile
        ),
        {},
    )
    assert o.addr_of(2) == ("l2", 6)
    assert o.cluster_config().learner_ids == (0, 1, 2)


@pytest.mark.parametrize(
    ("argv", "env", "msg"),
    [
        (["--acceptors", "a:1,b:2", "--key-file", "K"], {}, "must be odd"),
        (["--acceptors", "a:1", "--node-id", "5", "--key-file", "K"], {}, "not in 0..0"),
        (["--acceptors", "a:1"], {}, "--key-file is required"),
        (["--acceptors", "a:x", "--key-file", "K"], {}, "bad address"),
        (["--acceptors", "a:1", "--key-file", "K", "--window", "many"], {}, "window"),
        (["--acceptors", "a:1", "--key-file", "K"], {"PAXOS_NACK": "perhaps"}, "nack"),
        (["--acceptors", "a:1", "--key-file", "K", "--initial-cluster-state", "old"], {}, "new"),
        (["--acceptors", "a:1", "--key-file", "K", "--window", "0"], {}, "window"),
        (["--acceptors", "a:1", "--key-file", "K", "--tls-cert", "c"], {}, "go together"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    argv: list[str], env: dict[str, str], msg: str, keyfile: str
) -> None:
    argv = [keyfile if a == "K" else a for a in argv]
    with pytest.raises(OptionsError, match=msg):
        from_sources(_ns(*argv), env)


def test_unknown_yaml_keys_and_bad_files(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("acceptors: [a:1]\nwindw: 3\n")
    with pytest.raises(OptionsError, match=r"unknown settings.*windw"):
        from_sources(_ns("--config", str(f)), {})
    f.write_text("- just\n- a list\n")
    with pytest.raises(OptionsError, match="mapping"):
        from_sources(_ns("--config", str(f)), {})
    with pytest.raises(OptionsError, match="cannot read"):
        from_sources(_ns("--config", str(tmp_path / "missing.yaml")), {})


def test_ipv6_addresses() -> None:
    assert parse_addr("[::1]:7000") == ("::1", 7000)
    with pytest.raises(OptionsError):
        parse_addr("[::1]")


def test_the_node_process_exits_2_on_bad_settings(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "paxosrsm.net.main", "--acceptors", "a:1,b:2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2
    assert "must be odd" in p.stderr and "Traceback" not in p.stderr


def test_a_short_key_is_refused(tmp_path: Path) -> None:
    k = tmp_path / "k"
    k.write_text("short")
    p = subprocess.run(
        [sys.executable, "-m", "paxosrsm.net.main", "--acceptors", "127.0.0.1:1",
         "--key-file", str(k), "--data-dir", str(tmp_path / "d"), "--http-port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert "at least 16" in p.stderr and "Traceback" not in p.stderr


def test_node_id_from_the_statefulset_ordinal(
    keyfile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "px-learner-1")
    o = from_sources(
        _ns("--acceptors", "a:1,b:2,c:3", "--learners", "l:4,m:5", "--key-file", keyfile),
        {"PAXOS_ORDINAL_OFFSET": "3"},
    )
    assert o.node_id == 4 and o.addr_of(4) == ("m", 5)
    monkeypatch.setattr(socket, "gethostname", lambda: "nohyphen")
    with pytest.raises(OptionsError, match="ordinal"):
        from_sources(
            _ns("--acceptors", "a:1", "--key-file", keyfile), {"PAXOS_ORDINAL_OFFSET": "0"}
        )
