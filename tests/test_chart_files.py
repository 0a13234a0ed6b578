"""Static checks of the Helm chart that need no helm binary (helm lint runs in e2e)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "paxosrsm-operator"


def test_the_chart_ships_the_same_crds() -> None:
    for f in ("paxoscluster.yaml", "paxosbackup.yaml"):
        assert (CHART / "crds" / f).read_text() == (ROOT / "crds" / f).read_text()


def test_rbac_has_no_wildcards_no_deletecollection_and_no_secret_listing() -> None:
    """Least privilege (issue 14): only the verbs the code calls."""
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    rules = yaml.safe_load(
        text.split('define "paxos.namespacedRules" }}')[1].split("{{- end }}")[0]
    ) + yaml.safe_load(text.split('define "paxos.clusterReadRules" }}')[1].split("{{- end }}")[0])
    verbs = {r: set(rule["verbs"]) for rule in rules for r in rule["resources"]}
    assert all("*" not in v and "deletecollection" not in v for v in verbs.values()), verbs
    assert verbs["secrets"] == {"get", "create", "patch"}
    assert verbs["persistentvolumeclaims"] == {"get", "list", "create", "delete"}
    assert verbs["jobs"] == {"list", "create", "delete"}
    assert verbs["storageclasses"] == {"list"} and verbs["nodes"] == {"get"}
    assert "update" not in verbs["paxosclusters"]


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
    assert cols == ["Acceptors", "Ready", "Learners", "Leader", "Phase", "Age", "Operation"]


def test_the_operator_can_be_left_out_of_a_release() -> None:
    """operator.enabled=false: a release with only a PaxosCluster, for the
    operator of another release (two operators must never share CRs)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["operator"]["enabled"] is True
    for t in ("deployment.yaml", "rbac.yaml"):
        text = (CHART / "templates" / t).read_text()
        assert text.startswith("{{- if .Values.operator.enabled }}\n")
        assert text.rstrip().endswith("{{- end }}")
