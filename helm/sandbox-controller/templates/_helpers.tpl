{{/*
The name of every object, as in manifests/. It is fixed (not derived from the
release name): a second installation needs its own pair of namespaces.
*/}}
{{- define "sandbox-controller.name" -}}
sandbox-controller
{{- end -}}

{{/*
Helm's standard labels, added to the metadata of every object (not to the
Pod template or the selector, which stay as in manifests/).
*/}}
{{- define "sandbox-controller.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The port the controller listens on: config.listen.port (8080). */}}
{{- define "sandbox-controller.port" -}}
{{- dig "listen" "port" 8080 .Values.config | int -}}
{{- end -}}

{{/* The name of the container port, of the Service port and of the probes' port. */}}
{{- define "sandbox-controller.portName" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end -}}
{{- end -}}

{{/*
The controller's config.yaml: .Values.config plus what the chart owns
(namespace, tls, auth.client_certs). Every check of the values is here: the
ConfigMap always includes it, so a bad combination fails the whole render.
*/}}
{{- define "sandbox-controller.config" -}}
{{- $v := .Values -}}
{{- if eq $v.controllerNamespace $v.sandboxNamespace -}}
{{- fail "controllerNamespace and sandboxNamespace must differ: the controller may exec into every Pod of the sandbox namespace" -}}
{{- end -}}
{{- $cfg := deepCopy $v.config -}}
{{- if and (hasKey $cfg "namespace") (ne (toString $cfg.namespace) $v.sandboxNamespace) -}}
{{- fail (printf "config.namespace %q differs from sandboxNamespace %q: set sandboxNamespace only (the chart writes it into the config and makes the Role there)" (toString $cfg.namespace) $v.sandboxNamespace) -}}
{{- end -}}
{{- $_ := set $cfg "namespace" $v.sandboxNamespace -}}
{{- if hasKey $cfg "tls" -}}
{{- fail "config.tls: set the tls and clientCA values instead (they mount the files and write these keys)" -}}
{{- end -}}
{{- $auth := $cfg.auth | default dict -}}
{{- if hasKey $auth "client_certs" -}}
{{- fail "config.auth.client_certs: set clientCA.clientCerts instead" -}}
{{- end -}}
{{- if $v.tls.enabled -}}
{{- if not $v.tls.secretName -}}
{{- fail "tls.enabled needs tls.secretName: a kubernetes.io/tls Secret in controllerNamespace" -}}
{{- end -}}
{{- $tls := dict "cert_file" "/etc/sandbox-controller/tls/tls.crt" "key_file" "/etc/sandbox-controller/tls/tls.key" -}}
{{- if $v.clientCA.enabled -}}
{{- if eq (empty $v.clientCA.secretName) (empty $v.clientCA.configMapName) -}}
{{- fail "clientCA.enabled needs exactly one of clientCA.secretName and clientCA.configMapName" -}}
{{- end -}}
{{- if not $v.clientCA.clientCerts -}}
{{- fail "clientCA.enabled needs clientCA.clientCerts: a CA with no subject mapped to a tenant would admit nobody" -}}
{{- end -}}
{{- $_ := set $tls "client_ca_file" "/etc/sandbox-controller/client-ca/ca.crt" -}}
{{- $_ := set $auth "client_certs" $v.clientCA.clientCerts -}}
{{- $_ := set $cfg "auth" $auth -}}
{{- end -}}
{{- $_ := set $cfg "tls" $tls -}}
{{- else if $v.clientCA.enabled -}}
{{- fail "clientCA.enabled needs tls.enabled: client certificates are asked for over HTTPS only" -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}
