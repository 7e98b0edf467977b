{{- /*
  One Deployment for a Langfuse component (web | worker) of the stand-in.
  Input: dict "root" $ "component" "web"|"worker".
  Settings under langfuse.<component> win over the shared langfuse.* ones.
*/ -}}
{{- define "lfstub.deployment" -}}
{{- $root := .root -}}
{{- $c := .component -}}
{{- $L := $root.Values.langfuse -}}
{{- $C := index $L $c -}}
{{- $fullname := include "lfstub.fullname" $root -}}
{{- $podLabels := merge (dict) ($C.pod.labels | default dict) ($L.pod.labels | default dict) -}}
{{- $podAnnotations := merge (dict) ($C.pod.annotations | default dict) ($L.pod.annotations | default dict) -}}
{{- $scaled := or ($C.hpa | default dict).enabled ($C.keda | default dict).enabled -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}-{{ $c }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lfstub.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $c }}
    {{- with $C.deployment.additionalLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with (coalesce $C.deployment.annotations $L.deployment.annotations) }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not $scaled }}
  {{- /* hpa/keda own the replica count when enabled */}}
  replicas: {{ $C.replicas | default $L.replicas }}
  {{- end }}
  revisionHistoryLimit: {{ $C.revisionHistoryLimit | default $L.revisionHistoryLimit }}
  {{- with (coalesce $C.deployment.strategy $L.deployment.strategy) }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "lfstub.selectorLabels" $root | nindent 6 }}
      app: {{ $c }}
  template:
    metadata:
      {{- with $podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      labels:
        {{- include "lfstub.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $c }}
        app: {{ $c }}
        {{- with $podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with $C.hostAliases }}
      hostAliases:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with ($C.image.pullSecrets | default $L.image.pullSecrets) }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      serviceAccountName: {{ include "lfstub.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $L.serviceAccount.automountServiceAccountToken }}
      securityContext:
        {{- toYaml $L.podSecurityContext | nindent 8 }}
      {{- with $L.extraInitContainers }}
      initContainers:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $L.extraVolumes }}
      volumes:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        {{- with (concat ($L.extraContainers | default list) ($C.pod.extraContainers | default list)) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        - name: {{ $root.Chart.Name }}-{{ $c }}
          securityContext:
            {{- toYaml $L.securityContext | nindent 12 }}
          image: {{ printf "%s:%s" $C.image.repository (include "lfstub.str" (coalesce $C.image.tag $L.image.tag $root.Chart.AppVersion)) | quote }}
          imagePullPolicy: {{ $C.image.pullPolicy | default $L.image.pullPolicy }}
          env:
            {{- include "lfstub.containerEnv" (dict "root" $root "component" $c) | nindent 12 }}
          {{- with (concat ($L.additionalEnvFrom | default list) ($C.pod.additionalEnvFrom | default list)) }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: http
              {{- if eq $c "web" }}
              containerPort: {{ $C.service.port }}
              {{- else }}
              containerPort: {{ $C.port | default 3030 }}
              {{- end }}
              protocol: TCP
          {{- if eq $c "web" }}
          livenessProbe:
            {{- include "lfstub.httpProbe" (dict "probe" $C.livenessProbe "path" "/api/public/health") | nindent 12 }}
          readinessProbe:
            {{- include "lfstub.httpProbe" (dict "probe" $C.readinessProbe "path" "/api/public/ready") | nindent 12 }}
          {{- else }}
          livenessProbe:
            {{- /* the worker health path is fixed */}}
            {{- include "lfstub.httpProbe" (dict "probe" (omit ($C.livenessProbe | default dict) "path") "path" "/api/health") | nindent 12 }}
          {{- end }}
          {{- with $L.extraLifecycle }}
          lifecycle:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml ($C.resources | default $L.resources) | nindent 12 }}
          {{- with $L.extraVolumeMounts }}
          volumeMounts:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      {{- with (coalesce $C.pod.nodeSelector $L.nodeSelector) }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (coalesce $C.pod.affinity $L.affinity) }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (coalesce $C.pod.tolerations $L.tolerations) }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (coalesce $C.pod.topologySpreadConstraints $L.pod.topologySpreadConstraints) }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $L.dnsConfig }}
      dnsConfig:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{- /* httpGet probe on the named port "http"; empty settings take the official fallbacks */ -}}
{{- define "lfstub.httpProbe" -}}
{{- $p := .probe | default dict -}}
httpGet:
  path: {{ $p.path | default .path }}
  port: http
initialDelaySeconds: {{ $p.initialDelaySeconds | default 20 }}
periodSeconds: {{ $p.periodSeconds | default 10 }}
timeoutSeconds: {{ $p.timeoutSeconds | default 5 }}
successThreshold: {{ $p.successThreshold | default 1 }}
failureThreshold: {{ $p.failureThreshold | default 5 }}
{{- end -}}

{{- /* HorizontalPodAutoscaler for a component. Input: dict "root" $ "component" c */ -}}
{{- define "lfstub.hpa" -}}
{{- $root := .root -}}
{{- $hpa := (index $root.Values.langfuse .component).hpa -}}
{{- $target := printf "%s-%s" (include "lfstub.fullname" $root) .component -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $target }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lfstub.labels" $root | nindent 4 }}
  {{- with $hpa.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $target }}
  minReplicas: {{ $hpa.minReplicas }}
  maxReplicas: {{ $hpa.maxReplicas }}
  metrics:
    {{- range $resource, $pct := dict "cpu" $hpa.targetCPUUtilizationPercentage "memory" $hpa.targetMemoryUtilizationPercentage }}
    {{- if $pct }}
    - type: Resource
      resource:
        name: {{ $resource }}
        target:
          type: Utilization
          averageUtilization: {{ $pct }}
    {{- end }}
    {{- end }}
{{- end -}}

{{- /* KEDA ScaledObject for a component. Input: dict "root" $ "component" c */ -}}
{{- define "lfstub.scaledObject" -}}
{{- $root := .root -}}
{{- $k := (index $root.Values.langfuse .component).keda -}}
{{- $target := printf "%s-%s" (include "lfstub.fullname" $root) .component -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $target }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lfstub.labels" $root | nindent 4 }}
spec:
  scaleTargetRef:
    name: {{ $target }}
  minReplicaCount: {{ $k.minReplicas }}
  maxReplicaCount: {{ $k.maxReplicas }}
  pollingInterval: {{ $k.pollingInterval }}
  triggers:
    - type: {{ $k.triggerType }}
      metricType: {{ $k.metricType }}
      metadata:
        value: {{ include "lfstub.str" $k.value | quote }}
        {{- with $k.containerName }}
        containerName: {{ . | quote }}
        {{- end }}
{{- end -}}

{{- /* PodDisruptionBudget <fullname>-<component>-pdb. Input: dict "root" $ "component" c */ -}}
{{- define "lfstub.pdb" -}}
{{- $root := .root -}}
{{- $L := $root.Values.langfuse -}}
{{- $C := index $L .component -}}
{{- $pdb := $C.pdb -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "lfstub.fullname" $root }}-{{ .component }}-pdb
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lfstub.labels" $root | nindent 4 }}
  {{- /* the official chart annotates the PDB with the deployment annotations */}}
  {{- with (coalesce $C.deployment.annotations $L.deployment.annotations) }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $pdb.minAvailable }}
  minAvailable: {{ . }}
  {{- end }}
  {{- /* neither set -> maxUnavailable: 1 */}}
  {{- if or $pdb.maxUnavailable (not $pdb.minAvailable) }}
  maxUnavailable: {{ $pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "lfstub.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- /* VerticalPodAutoscaler (only when the VPA API exists). Input: dict "root" $ "component" c */ -}}
{{- define "lfstub.vpa" -}}
{{- $root := .root -}}
{{- $v := (index $root.Values.langfuse .component).vpa -}}
{{- $target := printf "%s-%s" (include "lfstub.fullname" $root) .component -}}
apiVersion: autoscaling.k8s.io/v1
kind: VerticalPodAutoscaler
metadata:
  name: {{ $target }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lfstub.labels" $root | nindent 4 }}
spec:
  resourcePolicy:
    containerPolicies:
      - containerName: {{ $root.Chart.Name }}-{{ .component }}
        {{- with $v.controlledResources }}
        controlledResources:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $v.maxAllowed }}
        maxAllowed:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $v.minAllowed }}
        minAllowed:
          {{- toYaml . | nindent 10 }}
        {{- end }}
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $target }}
  {{- with $v.updatePolicy }}
  updatePolicy:
    {{- with .updateMode }}
    updateMode: {{ . | quote }}
    {{- end }}
  {{- end }}
{{- end -}}
