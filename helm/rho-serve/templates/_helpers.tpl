{{/* Names, labels and small computed values shared by the templates. */}}

{{- define "rho-serve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: 63 characters at most (DNS label). */}}
{{- define "rho-serve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rho-serve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rho-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rho-serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rho-serve.labels" -}}
helm.sh/chart: {{ include "rho-serve.chart" . }}
{{ include "rho-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rho-serve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rho-serve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image tag: explicit, or appVersion plus the flavour the Dockerfile builds (-cpu by default, -cuda for GPUs). */}}
{{- define "rho-serve.image" -}}
{{- $flavour := ternary "cuda" "cpu" .Values.gpu.enabled }}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion $flavour) .Values.image.tag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* The Secret holding the API key: the user's own, or the chart's. */}}
{{- define "rho-serve.secretName" -}}
{{- default (include "rho-serve.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{- define "rho-serve.secretKey" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecretKey }}
{{- else }}
{{- print "api-key" }}
{{- end }}
{{- end }}

{{/* The API key for the chart's Secret: the value given, else the one already installed, else a new random one. */}}
{{- define "rho-serve.apiKey" -}}
{{- if .Values.auth.apiKey }}
{{- .Values.auth.apiKey }}
{{- else }}
{{- $current := lookup "v1" "Secret" .Release.Namespace (include "rho-serve.fullname" .) }}
{{- if and $current $current.data (hasKey $current.data "api-key") }}
{{- index $current.data "api-key" | b64dec }}
{{- else }}
{{- randAlphaNum 40 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where the API key file is mounted in the container (read by rho-serve through API_KEY_FILE). */}}
{{- define "rho-serve.apiKeyDir" -}}
/var/run/secrets/rho-serve
{{- end }}

{{- define "rho-serve.claimName" -}}
{{- default (printf "%s-models" (include "rho-serve.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Pod termination: long enough for the preStop pause plus the drain, with a margin for the process to exit. */}}
{{- define "rho-serve.terminationGracePeriodSeconds" -}}
{{- $drain := add .Values.server.preStopSleepSeconds .Values.server.gracefulTerminationTimeout }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $drain 15 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed server.preStopSleepSeconds + server.gracefulTerminationTimeout (%v), or Kubernetes kills requests that are still draining" .Values.terminationGracePeriodSeconds $drain) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Container resources, with the GPU added to the limits when gpu.enabled. */}}
{{- define "rho-serve.resources" -}}
{{- $resources := deepCopy .Values.resources }}
{{- if .Values.gpu.enabled }}
{{- $limits := default (dict) $resources.limits }}
{{- $_ := set $limits .Values.gpu.resourceName .Values.gpu.count }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* Configuration mistakes that Kubernetes would accept but that cannot work. */}}
{{- define "rho-serve.validate" -}}
{{- if and (or (eq .Values.model.id "/data") (hasPrefix "/data/" .Values.model.id)) (not .Values.persistence.enabled) }}
{{- fail (printf "model.id %q is on the model volume, but persistence.enabled is false: enable persistence (or persistence.existingClaim) or leave model.id empty for the bundled model" .Values.model.id) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.queueSize.enabled) }}
{{- fail "autoscaling.enabled needs a metric: set autoscaling.targetCPUUtilizationPercentage or autoscaling.queueSize.enabled" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%v) must not exceed autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) }}
{{- end }}
{{- end }}
