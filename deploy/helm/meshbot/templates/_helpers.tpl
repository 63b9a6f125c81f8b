{{/* The name every object of this release starts with (cluster-scoped ones must not collide across installs). */}}
{{- define "meshbot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "meshbot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object.  helm.sh/chart and managed-by are Helm's bookkeeping; the kustomize base
     (deploy/kubernetes/meshbot.yaml) is rendered without them. */}}
{{- define "meshbot.labels" -}}
app.kubernetes.io/name: {{ include "meshbot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: meshbot
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "meshbot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshbot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: bot
{{- end -}}

{{/* The identity the API server sees for meshbot's requests: what the admission policies match. */}}
{{- define "meshbot.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "meshbot.fullname" . }}
{{- end -}}

{{- define "meshbot.subjects" -}}
- kind: ServiceAccount
  name: {{ include "meshbot.fullname" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{- define "meshbot.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "meshbot.secretFile" -}}
/var/run/secrets/meshbot/{{ . }}
{{- end -}}

{{/* Refuse combinations that would install a broken meshbot (values.schema.json says the same for helm). */}}
{{- define "meshbot.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.database.postgres) -}}
{{- fail "replicas > 1 needs database.postgres=true: SQLite on a ReadWriteOnce volume serves one replica" -}}
{{- end -}}
{{- if and (ne .Values.slack.mode "http") (or .Values.slack.ingress.enabled .Values.slack.httpRoute.enabled) -}}
{{- fail "slack.ingress and slack.httpRoute are for slack.mode=http: Socket Mode needs no inbound route" -}}
{{- end -}}
{{- end -}}
