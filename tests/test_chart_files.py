"""Static checks of the Helm chart that need no helm binary (helm lint runs in e2e)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "paxosrsm-operator"


def test_the_chart_ships_the_same_crd() -> None:
    assert (CHART / "crds" / "paxoscluster.yaml").read_text() == (
        ROOT / "crds" / "paxoscluster.yaml"
    ).read_text()


def test_values_match_their_schema() -> None:
    import re

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(schema["required"]) <= set(values)
    c = values["cluster"]
    assert c["acceptors"] in schema["properties"]["cluster"]["properties"]["acceptors"]["enum"]
    pat = schema["properties"]["cluster"]["properties"]["storage"]["properties"]["size"]["pattern"]
    assert re.match(pat, c["storage"]["size"]) and not re.match(pat, "-1Gi")


def test_crd_is_structural_and_names_the_immutable_field() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "paxoscluster.yaml").read_text())
    v = crd["spec"]["versions"][0]
    spec = v["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["acceptors"]["enum"] == [1, 3, 5, 7, 9]
    assert "immutable" in spec["x-kubernetes-validations"][0]["message"]
    cols = [c["name"] for c in v["additionalPrinterColumns"]]
    assert cols == ["Acceptors", "Ready", "Learners", "Leader", "Phase", "Age"]


def test_the_operator_can_be_left_out_of_a_release() -> None:
    """operator.enabled=false: a release with only a PaxosCluster, for the
    operator of another release (two operators must never share CRs)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["operator"]["enabled"] is True
    for t in ("deployment.yaml", "rbac.yaml"):
        text = (CHART / "templates" / t).read_text()
        assert text.startswith("{{- if .Values.operator.enabled }}\n")
        assert text.rstrip().endswith("{{- end }}")
