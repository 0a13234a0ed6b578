{{- define "paxos.fullname" -}}
{{- printf "%s-paxos-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "paxos.labels" -}}
app.kubernetes.io/name: paxos-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: paxosrsm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "paxos.selector" -}}
app.kubernetes.io/name: paxos-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- /* repository:tag, the tag defaulting to the chart's appVersion */ -}}
{{- define "paxos.image" -}}
{{- printf "%s:%s" .repository (.tag | default $.appVersion) -}}
{{- end -}}
{{- define "paxos.operatorImage" -}}
{{- include "paxos.image" (dict "repository" .Values.image.operator.repository "tag" .Values.image.operator.tag "appVersion" .Chart.AppVersion) -}}
{{- end -}}
{{- define "paxos.nodeImage" -}}
{{- include "paxos.image" (dict "repository" .Values.image.node.repository "tag" .Values.image.node.tag "appVersion" .Chart.AppVersion) -}}
{{- end -}}
{{- define "paxos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "paxos.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}
{{- /* Least privilege: only the verbs the code calls (handlers.py,
     backup_handlers.py; docs/kubernetes.md lists each and why). */}}
{{- define "paxos.namespacedRules" }}
- apiGroups: ["paxosrsm.dev"]
  resources: ["paxosclusters", "paxosbackups"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["paxosrsm.dev"]
  resources: ["paxosclusters/status", "paxosbackups/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  # get: only the operator's own Secrets are read (by name); patch: the
  # cluster key's rotation (rotation.py), asked for by an annotation.
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  # create/get: backup volumes; list/delete: reclaimPolicy Delete and a
  # forced new cluster. Never deletecollection.
  verbs: ["get", "list", "create", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  # backup Jobs and a forced new cluster's export
  verbs: ["list", "create", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
{{- end }}
{{- define "paxos.clusterReadRules" }}
# Cluster-scoped reads: stuck-pod detection, whether a StorageClass's volumes
# honour fsGroup, and kopf's discovery of its resources.
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get"]
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["list"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# kopf observes namespaces even when given --namespace (found by the
# namespace-scoped e2e test: 403 on GET /api/v1/namespaces). Names only.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
