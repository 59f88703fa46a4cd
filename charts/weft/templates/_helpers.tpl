{{/*
Names are fixed (the contract's): the injector, `weft-control-plane check`
and every sidecar address the control plane as weft-control-plane.<namespace>.svc,
and its RBAC may patch only the webhook configuration named weft-sidecar-injector.
One release per cluster.
*/}}
{{- define "weft.name" -}}weft-control-plane{{- end }}
{{- define "weft.webhookName" -}}weft-sidecar-injector{{- end }}

{{- define "weft.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "weft.proxyImage" -}}
{{ .Values.injector.proxy.image | default (include "weft.image" .) }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "weft.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weft
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The control plane's Pods: selector labels (immutable in a Deployment). */}}
{{- define "weft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weft.name" . }}
{{- end }}

{{/*
The control plane's RBAC rules, from the one definition in files/rbac.yaml.
Usage: include "weft.rbacRules" (list . "cluster")
*/}}
{{- define "weft.rbacRules" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $rbac := $root.Files.Get "files/rbac.yaml" | fromYaml -}}
{{- if hasKey $rbac "Error" -}}
{{- fail (printf "files/rbac.yaml: %s" $rbac.Error) -}}
{{- end -}}
{{- $rules := index $rbac $key -}}
{{- if not $rules -}}
{{- fail (printf "files/rbac.yaml has no %q rules" $key) -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end }}
