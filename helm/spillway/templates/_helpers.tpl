{{/* The release's resource name prefix. */}}
{{- define "spillway.fullname" -}}
{{- if contains "spillway" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-spillway" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "spillway.control" -}}
{{- printf "%s-control" (include "spillway.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "spillway.injector" -}}
{{- printf "%s-injector" (include "spillway.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "spillway.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "spillway.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "spillway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: spillway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "spillway.selector" -}}
app.kubernetes.io/name: spillway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end -}}

{{- define "spillway.controlImage" -}}
{{- printf "%s:%s" .Values.controlPlane.image.repository (default .Chart.AppVersion .Values.controlPlane.image.tag) -}}
{{- end -}}

{{- define "spillway.sidecarImage" -}}
{{- printf "%s:%s" .Values.injector.sidecar.image.repository (default .Chart.AppVersion .Values.injector.sidecar.image.tag) -}}
{{- end -}}

{{/* The gRPC address injected sidecars use. */}}
{{- define "spillway.grpcUrl" -}}
{{- printf "%s://%s.%s.svc:7000" (ternary "http" "https" (eq .Values.grpcTls.mode "plaintext")) (include "spillway.control" .) .Release.Namespace -}}
{{- end -}}
