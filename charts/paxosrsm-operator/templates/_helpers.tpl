{{- define "paxos.fullname" -}}
{{- printf "%s-paxos-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "paxos.labels" -}}
app.kubernetes.io/name: paxos-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
