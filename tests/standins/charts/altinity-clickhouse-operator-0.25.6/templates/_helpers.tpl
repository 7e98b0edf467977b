{{/*
TEST STAND-IN helpers. Names and labels follow the official chart 0.25.6:
fullname = release name if it contains the chart name, else <release>-<chart>;
fullnameOverride / nameOverride as usual.
*/}}
{{- define "altinity-clickhouse-operator.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{- define "altinity-clickhouse-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "altinity-clickhouse-operator.fullname" -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "altinity-clickhouse-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "altinity-clickhouse-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Common labels: chart, selector labels, version, commonLabels, managed-by (official order). */}}
{{- define "altinity-clickhouse-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "altinity-clickhouse-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The official chart writes Helm's ownership annotations itself, plus commonAnnotations. */}}
{{- define "altinity-clickhouse-operator.annotations" -}}
meta.helm.sh/release-name: {{ .Release.Name }}
meta.helm.sh/release-namespace: {{ .Release.Namespace }}
{{- with .Values.commonAnnotations }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{- define "altinity-clickhouse-operator.serviceAccountName" -}}
{{- default (include "altinity-clickhouse-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Image references: the tag defaults to the chart's appVersion. */}}
{{- define "altinity-clickhouse-operator.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (.Values.operator.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- define "altinity-clickhouse-operator.metricsImage" -}}
{{- printf "%s:%s" .Values.metrics.image.repository (.Values.metrics.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
The nine configuration ConfigMaps: name suffix, values key, volume name, mount path.
Each map value that is not a string is rendered as YAML (config.yaml).
*/}}
{{- define "altinity-clickhouse-operator.configMaps" -}}
- {suffix: files, key: files, volume: etc-clickhouse-operator-folder, path: /etc/clickhouse-operator}
- {suffix: confd-files, key: confdFiles, volume: etc-clickhouse-operator-confd-folder, path: /etc/clickhouse-operator/chi/conf.d}
- {suffix: configd-files, key: configdFiles, volume: etc-clickhouse-operator-configd-folder, path: /etc/clickhouse-operator/chi/config.d}
- {suffix: templatesd-files, key: templatesdFiles, volume: etc-clickhouse-operator-templatesd-folder, path: /etc/clickhouse-operator/chi/templates.d}
- {suffix: usersd-files, key: usersdFiles, volume: etc-clickhouse-operator-usersd-folder, path: /etc/clickhouse-operator/chi/users.d}
- {suffix: keeper-confd-files, key: keeperConfdFiles, volume: etc-keeper-operator-confd-folder, path: /etc/clickhouse-operator/chk/conf.d}
- {suffix: keeper-configd-files, key: keeperConfigdFiles, volume: etc-keeper-operator-configd-folder, path: /etc/clickhouse-operator/chk/keeper_config.d}
- {suffix: keeper-templatesd-files, key: keeperTemplatesdFiles, volume: etc-keeper-operator-templatesd-folder, path: /etc/clickhouse-operator/chk/templates.d}
- {suffix: keeper-usersd-files, key: keeperUsersdFiles, volume: etc-keeper-operator-usersd-folder, path: /etc/clickhouse-operator/chk/users.d}
{{- end -}}

{{- define "altinity-clickhouse-operator.configMapData" -}}
{{- $data := dict -}}
{{- range $file, $content := (index .root.Values.configs .key) -}}
{{- $_ := set $data $file (ternary $content (toYaml $content) (kindIs "string" $content)) -}}
{{- end -}}
{{- if $data }}{{ tpl (toYaml $data) .root }}{{ else }}null{{ end -}}
{{- end -}}

{{/* RBAC rules of the operator (ClusterRole, or Role when rbac.namespaceScoped). */}}
{{- define "altinity-clickhouse-operator.rules" -}}
{{- $all := list "get" "list" "patch" "update" "watch" "create" "delete" -}}
- {apiGroups: [""], resources: [configmaps, services, persistentvolumeclaims, secrets], verbs: {{ $all | toJson }}}
- {apiGroups: [""], resources: [endpoints], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [events], verbs: [create]}
- {apiGroups: [""], resources: [persistentvolumes], verbs: [get, list, patch, update, watch]}
- {apiGroups: [""], resources: [pods], verbs: [get, list, patch, update, watch, delete]}
- {apiGroups: [""], resources: [secrets], verbs: [get, list]}
- {apiGroups: [apps], resources: [statefulsets], verbs: {{ $all | toJson }}}
- {apiGroups: [apps], resources: [replicasets], verbs: [get, patch, update, delete]}
- {apiGroups: [apps], resources: [deployments], resourceNames: [{{ include "altinity-clickhouse-operator.fullname" . }}], verbs: [get, patch, update, delete]}
- {apiGroups: [policy], resources: [poddisruptionbudgets], verbs: {{ $all | toJson }}}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}
- {apiGroups: [apiextensions.k8s.io], resources: [customresourcedefinitions], verbs: [get, list]}
- {apiGroups: [clickhouse.altinity.com], resources: [clickhouseinstallations], verbs: [get, list, watch, patch, update, delete]}
- {apiGroups: [clickhouse.altinity.com], resources: [clickhouseinstallationtemplates, clickhouseoperatorconfigurations], verbs: [get, list, watch]}
- apiGroups: [clickhouse.altinity.com]
  resources: [clickhouseinstallations/finalizers, clickhouseinstallationtemplates/finalizers, clickhouseoperatorconfigurations/finalizers]
  verbs: [update]
- apiGroups: [clickhouse.altinity.com]
  resources: [clickhouseinstallations/status, clickhouseinstallationtemplates/status, clickhouseoperatorconfigurations/status]
  verbs: [get, update, patch, create, delete]
- {apiGroups: [clickhouse-keeper.altinity.com], resources: [clickhousekeeperinstallations], verbs: [get, list, watch, patch, update, delete]}
- {apiGroups: [clickhouse-keeper.altinity.com], resources: [clickhousekeeperinstallations/finalizers], verbs: [update]}
- {apiGroups: [clickhouse-keeper.altinity.com], resources: [clickhousekeeperinstallations/status], verbs: [get, update, patch, create, delete]}
{{- end -}}

{{/* Metadata of the CRD hook objects: labels plus the hook annotations with the given weight. */}}
{{- define "altinity-clickhouse-operator.crdHookMeta" -}}
labels:
  {{- include "altinity-clickhouse-operator.labels" .root | nindent 2 }}
  app.kubernetes.io/component: crd-install-hook
annotations:
  "helm.sh/hook": pre-install,pre-upgrade
  "helm.sh/hook-weight": {{ .weight | quote }}
  "helm.sh/hook-delete-policy": before-hook-creation,hook-succeeded
{{- end -}}
