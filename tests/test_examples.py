"""examples/: every resource validates against its CRD's schema (a checker
of the OpenAPI subset the CRDs use) and the operator's own validation, and
the operator builds its manifests from it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from paxos_operator import backups as bk
from paxos_operator import builders as b

ROOT = Path(__file__).resolve().parent.parent
CRDS = {
    "PaxosCluster": ROOT / "crds" / "paxoscluster.yaml",
    "PaxosBackup": ROOT / "crds" / "paxosbackup.yaml",
}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    errs: list[str] = []
    t = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}
    if t in types and not isinstance(value, types[t]):
        return [f"{path}: want {t}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", 1 << 30):
            errs.append(f"{path}: longer than {schema['maxLength']}")
    lo, hi = schema.get("minimum", -(1 << 62)), schema.get("maximum", 1 << 62)
    if isinstance(value, int) and not isinstance(value, bool) and not lo <= value <= hi:
        errs.append(f"{path}: {value} out of range")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                errs.append(f"{path}.{k}: required")
        for k, v in value.items():
            if k in props:
                errs += schema_errors(v, props[k], f"{path}.{k}")
            elif "additionalProperties" in schema:
                errs += schema_errors(v, schema["additionalProperties"], f"{path}.{k}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and props:
                errs.append(f"{path}.{k}: unknown field (the API server would drop it)")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errs += schema_errors(v, schema["items"], f"{path}[{i}]")
    return errs


def docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in sorted((ROOT / "examples").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d.get("kind") in CRDS:
                out.append((f"{f.name}:{d['metadata']['name']}", d))
    return out


@pytest.mark.parametrize("name, doc", docs(), ids=[n for n, _ in docs()])
def test_every_example_is_valid(name: str, doc: dict[str, Any]) -> None:
    crd = yaml.safe_load(CRDS[doc["kind"]].read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema_errors({"spec": doc["spec"]}, {**schema, "required": []}) == []
    cr = {**doc, "metadata": {**doc["metadata"], "namespace": "default", "uid": "u"}}
    if doc["kind"] == "PaxosCluster":
        spec = {"image": "paxosrsm/node:0.1.0", **doc["spec"]}
        assert b.validate(spec) == [] and bk.validate_restore(spec) == []
        cr["spec"] = spec
        for role in ("acceptor", "learner"):
            sts = b.statefulset(cr, role, level=b.CURRENT, restore=bk.restore_source(cr))
            pod = sts["spec"]["template"]["spec"]
            for k in ("affinity", "topologySpreadConstraints"):
                if k in doc["spec"].get("podTemplate", {}):
                    assert pod[k] == doc["spec"]["podTemplate"][k]
            if doc["spec"].get("tls"):
                env = {e["name"] for e in pod["containers"][0]["env"]}
                assert {"PAXOS_TLS_CERT", "PAXOS_TLS_KEY", "PAXOS_TLS_CA"} <= env
    else:
        assert bk.validate(doc["spec"]) == []


def test_the_schema_checker_catches_what_the_server_would_refuse() -> None:
    crd = yaml.safe_load(CRDS["PaxosCluster"].read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    bad = {"spec": {"acceptors": 4, "learners": 40, "storage": {"size": "big"}, "typo": 1}}
    errs = schema_errors(bad, schema)
    assert len(errs) == 4, errs
