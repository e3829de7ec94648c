{{- define "leo.fullname" -}}
{{- printf "%s-manager" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Cluster-scoped objects carry the namespace too: two releases of the same name in two namespaces must not clash. */}}
{{- define "leo.clusterName" -}}
{{- printf "%s-%s-manager" .Release.Namespace .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "leo.metricsServiceName" -}}
{{- printf "%s-metrics" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "leo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "leo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name the ServiceAccount the manager runs as" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "leo.labels" -}}
app.kubernetes.io/name: leo
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "leo.selectorLabels" -}}
app.kubernetes.io/name: leo
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end -}}
