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

{{- define "leo.gatewayName" -}}
{{- printf "%s-gateway" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "leo.gatewayClusterName" -}}
{{- printf "%s-%s-gateway" .Release.Namespace .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "leo.gatewaySelectorLabels" -}}
app.kubernetes.io/name: leo-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* The gateway's in-cluster base URL, for the endpoints' scoring URIs. */}}
{{- define "leo.gatewayURL" -}}
{{- if .Values.gateway.externalURL -}}
{{- .Values.gateway.externalURL -}}
{{- else -}}
{{- printf "http://%s.%s.svc.%s" (include "leo.gatewayName" .) .Release.Namespace .Values.clusterDomain -}}
{{- if ne (int .Values.gateway.service.port) 80 -}}:{{ .Values.gateway.service.port }}{{- end -}}
{{- end -}}
{{- end -}}
