{{- /*
  Helpers of the cloudnative-pg 0.29.0 TEST STAND-IN chart.
  Names and labels come out as the official chart renders them; the
  template code is the stand-in's own.
*/ -}}

{{- define "cnpgstub.namespace" -}}
{{- .Values.namespaceOverride | default .Release.Namespace -}}
{{- end -}}

{{- define "cnpgstub.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* The release name when it already contains the chart name, else <release>-<name>:
       release "cnpg" -> "cnpg-cloudnative-pg". */ -}}
{{- define "cnpgstub.fullname" -}}
{{- $full := .Values.fullnameOverride -}}
{{- if not $full -}}
  {{- $base := .Values.nameOverride | default .Chart.Name -}}
  {{- $full = ternary .Release.Name (printf "%s-%s" .Release.Name $base) (contains $base .Release.Name) -}}
{{- end -}}
{{- $full | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cnpgstub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cnpgstub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cnpgstub.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cnpgstub.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "cnpgstub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "cnpgstub.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "cnpgstub.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- /* metadata.annotations from commonAnnotations, or nothing */ -}}
{{- define "cnpgstub.commonAnnotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /*
  What the operator may do. The official chart spells out every verb per
  resource; the stand-in grants the same resources with a coarser verb list
  (nothing runs under this ServiceAccount: the reconciler is a local process).
*/ -}}
{{- define "cnpgstub.namespacedRules" -}}
- apiGroups: [""]
  resources: [configmaps, secrets, services, persistentvolumeclaims, pods, pods/exec, serviceaccounts, events]
  verbs: [create, delete, get, list, patch, update, watch]
- apiGroups: [""]
  resources: [configmaps/status, secrets/status, pods/status]
  verbs: [get, patch, update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [create, delete, get, list, patch, update, watch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, delete, get, list, patch, watch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create, get, list, update, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [monitoring.coreos.com]
  resources: [podmonitors]
  verbs: [create, delete, get, list, patch, watch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, delete, get, list, patch, update, watch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create, get, list, patch, update, watch]
- apiGroups: [snapshot.storage.k8s.io]
  resources: [volumesnapshots]
  verbs: [create, get, list, patch, watch]
- apiGroups: [postgresql.cnpg.io]
  resources: [backups, clusters, databaseroles, databases, failoverquorums, poolers, publications, scheduledbackups, subscriptions, imagecatalogs]
  verbs: [create, delete, get, list, patch, update, watch]
- apiGroups: [postgresql.cnpg.io]
  resources: [backups/status, clusters/status, databaseroles/status, databases/status, failoverquorums/status, poolers/status, publications/status, scheduledbackups/status, subscriptions/status, clusters/finalizers, databaseroles/finalizers, poolers/finalizers]
  verbs: [get, patch, update, watch]
{{- end -}}

{{- define "cnpgstub.clusterRules" -}}
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations, validatingwebhookconfigurations]
  verbs: [get, patch]
- apiGroups: [postgresql.cnpg.io]
  resources: [clusterimagecatalogs]
  verbs: [get, list, watch]
{{- end -}}

{{- define "cnpgstub.guards" -}}
{{- if .Values.monitoring.grafanaDashboard.create -}}
{{- fail "monitoring.grafanaDashboard.create: the cloudnative-pg TEST STAND-IN has no Grafana dashboard sub-chart; leave it false" -}}
{{- end -}}
{{- end -}}
