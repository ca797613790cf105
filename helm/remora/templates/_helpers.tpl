{{/* Names and labels shared by the templates. */}}
{{- define "remora.fullname" -}}
{{- if contains "remora" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-remora" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "remora.control" -}}
{{- printf "%s-control" (include "remora.fullname" .) -}}
{{- end -}}

{{- define "remora.labels" -}}
app.kubernetes.io/name: remora
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "remora.controlSelector" -}}
app.kubernetes.io/name: remora
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end -}}

{{- define "remora.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{- define "remora.caSecret" -}}
{{- default (printf "%s-ca" (include "remora.fullname" .)) .Values.ca.existingSecret -}}
{{- end -}}

{{- define "remora.meshConfigMap" -}}
{{- default (printf "%s-mesh" (include "remora.fullname" .)) .Values.mesh.existingConfigMap -}}
{{- end -}}

{{- define "remora.webhookSecret" -}}
{{- default (printf "%s-webhook-tls" (include "remora.fullname" .)) .Values.injection.existingCertSecret -}}
{{- end -}}

{{/* Native sidecars: always, never, or by the cluster's version (>= 1.29). */}}
{{- define "remora.nativeSidecar" -}}
{{- if eq .Values.injection.nativeSidecar "always" -}}true
{{- else if eq .Values.injection.nativeSidecar "never" -}}false
{{- else -}}{{ semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version }}
{{- end -}}
{{- end -}}
