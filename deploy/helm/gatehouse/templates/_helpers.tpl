{{/*
The chart's name, truncated to 63 characters (a DNS label).
*/}}
{{- define "gatehouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, the name of every object: the release name when it
already contains the chart's name (helm install gatehouse ... gives
"gatehouse"), else "<release>-<chart>".
*/}}
{{- define "gatehouse.fullname" -}}
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

{{/*
chart name and version, for the helm.sh/chart label.
*/}}
{{- define "gatehouse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels every object carries.
*/}}
{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ include "gatehouse.chart" . }}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gatehouse
{{- end }}

{{/*
The labels that select the release's pods: never change them in an upgrade
(a Deployment's selector is immutable).
*/}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatehouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "gatehouse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gatehouse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository@digest when a digest is set, else
repository:tag with the tag defaulting to "v" + appVersion (the git tag of the
release `make image` builds).
*/}}
{{- define "gatehouse.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The port of a listen address such as ":9191" or "0.0.0.0:9191", for the
container ports: the configuration owns where Gatehouse listens. Called with
(list address default).
*/}}
{{- define "gatehouse.listenPort" -}}
{{- $addr := default (index . 1) (index . 0) }}
{{- $port := regexFind "[0-9]+$" $addr }}
{{- if not $port }}
{{- fail (printf "config.listen: %q is not a listen address such as \":9191\"" $addr) }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
The configuration file's content, with the chart's own keys resolved.
*/}}
{{- define "gatehouse.config" -}}
{{- toYaml .Values.config }}
{{- end }}

{{/*
GOMEMLIMIT: .Values.goMemLimit when set, else goMemLimitPercent of
resources.limits.memory in MiB rounded down (256Mi -> 230MiB). Empty without a
memory limit. Quantities: a plain number of bytes, or one with a Ki, Mi, Gi,
Ti, k, M, G or T suffix, decimals allowed ("1.5Gi").
*/}}
{{- define "gatehouse.goMemLimit" -}}
{{- if .Values.goMemLimit }}
{{- .Values.goMemLimit }}
{{- else }}
{{- $limit := "" }}
{{- with .Values.resources }}{{ with .limits }}{{ with .memory }}{{ $limit = ternary (printf "%.0f" .) (toString .) (kindIs "float64" .) }}{{ end }}{{ end }}{{ end }}
{{- if $limit }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $limit }}
{{- $unit := trimPrefix $number $limit }}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- if or (not $number) (not (hasKey $units $unit)) }}
{{- fail (printf "resources.limits.memory %q: cannot derive GOMEMLIMIT from it (use a number with Ki, Mi, Gi, Ti, k, M, G or T, or set goMemLimit)" $limit) }}
{{- end }}
{{- $bytes := mulf (float64 $number) (index $units $unit) }}
{{- $mib := floor (divf (mulf $bytes .Values.goMemLimitPercent) 104857600) }}
{{- if lt $mib 1.0 }}
{{- fail (printf "resources.limits.memory %q is too small to run Gatehouse" $limit) }}
{{- end }}
{{- printf "%dMiB" (int64 $mib) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether extraEnv sets GOMEMLIMIT itself ("true" or "").
*/}}
{{- define "gatehouse.extraEnvHasGoMemLimit" -}}
{{- range .Values.extraEnv }}{{ if eq .name "GOMEMLIMIT" }}true{{ end }}{{ end }}
{{- end }}

{{/*
The volume mounts of the gatehouse container, shared with the validate init
container: the config file (subPath) and the policies directory, at the paths
the kustomize base uses.
*/}}
{{- define "gatehouse.volumeMounts" -}}
- name: config
  mountPath: /etc/gatehouse/gatehouse.yaml
  subPath: gatehouse.yaml
  readOnly: true
{{- if .Values.policies }}
- name: policies
  mountPath: /etc/gatehouse/policies
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The checksum of everything the pods read from the chart's ConfigMaps: a
change rolls the Deployment.
*/}}
{{- define "gatehouse.configChecksum" -}}
{{- printf "%s\n---\n%s" (include "gatehouse.config" .) (toYaml .Values.policies) | sha256sum }}
{{- end }}
