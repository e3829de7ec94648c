{{- define "leo.fullname" -}}
{{- printf "%s-manager" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "leo.serviceAccountName" -}}
{{- default (include "leo.fullname" .) .Values.serviceAccount.name -}}
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
