{{- /*
  Helpers of the langfuse 2.0.0 TEST STAND-IN chart.

  Written for tests: names, labels and the generated env follow the official
  chart 2.0.0, but the implementation is the stand-in's own. Environment
  variables are assembled as a list of maps and emitted with toYaml.
*/ -}}

{{- /* ---------------------------------------------------------------- names */ -}}

{{- define "lfstub.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* release name when it already contains the chart name, else <release>-<name> */ -}}
{{- define "lfstub.fullname" -}}
{{- $full := .Values.fullnameOverride -}}
{{- if not $full -}}
  {{- $base := .Values.nameOverride | default .Chart.Name -}}
  {{- $full = ternary .Release.Name (printf "%s-%s" .Release.Name $base) (contains $base .Release.Name) -}}
{{- end -}}
{{- $full | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lfstub.serviceAccountName" -}}
{{- $sa := .Values.langfuse.serviceAccount -}}
{{- if $sa.create -}}
{{- $sa.name | default (include "lfstub.fullname" .) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- /* --------------------------------------------------------------- labels */ -}}

{{- define "lfstub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lfstub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lfstub.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "lfstub.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- /* ---------------------------------------------------------- small utils */ -}}

{{- /* Stringify a scalar the way `quote` would, but nil -> "" */ -}}
{{- define "lfstub.str" -}}
{{- if not (kindIs "invalid" .) -}}{{ toString . }}{{- end -}}
{{- end -}}

{{- /*
  Is env var .name present in the list .env? An entry counts unless its
  `value` is literally "" -- so an entry carrying only valueFrom counts, the
  same as with the official chart.
  Prints "true" or nothing.
*/ -}}
{{- define "lfstub.envHas" -}}
{{- $want := .name -}}
{{- range (.env | default list) -}}
  {{- if eq (toString .name) $want -}}
    {{- if not (and (hasKey . "value") (kindIs "string" .value) (eq .value "")) -}}true{{- end -}}
  {{- end -}}
{{- end -}}
{{- end -}}

{{- /*
  Resolve a "value | secretKeyRef | fieldRef | resourceFieldRef" setting to an
  env var source, printed as YAML (`value: ...` or `valueFrom: ...`), or
  nothing when none is set. Input: dict "key" <label for errors> "value" <map>.
*/ -}}
{{- define "lfstub.source" -}}
{{- $v := .value | default dict -}}
{{- $skr := $v.secretKeyRef | default dict -}}
{{- $fr := $v.fieldRef | default dict -}}
{{- $rfr := $v.resourceFieldRef | default dict -}}
{{- $found := list -}}
{{- $out := dict -}}
{{- if and $skr.name $skr.key -}}
  {{- $found = append $found "secretKeyRef" -}}
  {{- $_ := set $out "valueFrom" (dict "secretKeyRef" (dict "name" $skr.name "key" $skr.key)) -}}
{{- end -}}
{{- if $fr.fieldPath -}}
  {{- $found = append $found "fieldRef" -}}
  {{- $ref := dict "fieldPath" $fr.fieldPath -}}
  {{- with $fr.apiVersion }}{{ $_ := set $ref "apiVersion" . }}{{ end -}}
  {{- $_ := set $out "valueFrom" (dict "fieldRef" $ref) -}}
{{- end -}}
{{- if $rfr.resource -}}
  {{- $found = append $found "resourceFieldRef" -}}
  {{- $ref := dict "resource" $rfr.resource -}}
  {{- with $rfr.containerName }}{{ $_ := set $ref "containerName" . }}{{ end -}}
  {{- with $rfr.divisor }}{{ $_ := set $ref "divisor" . }}{{ end -}}
  {{- $_ := set $out "valueFrom" (dict "resourceFieldRef" $ref) -}}
{{- end -}}
{{- if $v.value -}}
  {{- $found = append $found "value" -}}
  {{- $_ := set $out "value" (toString $v.value) -}}
{{- end -}}
{{- if gt (len $found) 1 -}}
  {{- fail (printf ".value, .secretKeyRef, .fieldRef, and .resourceFieldRef are mutually exclusive for %s" .key) -}}
{{- end -}}
{{- if $out }}{{ toYaml $out }}{{ end -}}
{{- end -}}

{{- /* Name of the chart-managed app Secret (salt / encryption-key / nextauth-secret) */ -}}
{{- define "lfstub.appSecretName" -}}
{{- printf "%s-app" (include "lfstub.fullname" .) -}}
{{- end -}}

{{- /*
  2.0.0: an app credential comes from value/secretKeyRef/... when given, else
  from key .secretKey of <fullname>-app. Input: dict "root" "key" "value" "secretKey".
*/ -}}
{{- define "lfstub.appSource" -}}
{{- $src := include "lfstub.source" (dict "key" .key "value" .value) -}}
{{- if $src -}}
{{- $src -}}
{{- else -}}
{{- toYaml (dict "valueFrom" (dict "secretKeyRef" (dict "name" (include "lfstub.appSecretName" .root) "key" .secretKey))) -}}
{{- end -}}
{{- end -}}

{{- /* ------------------------------------------------------------ hostnames */ -}}

{{- /* clickhouse.host without any http:// or https:// prefix */ -}}
{{- define "lfstub.clickhouse.host" -}}
{{- include "lfstub.str" .Values.clickhouse.host | trimPrefix "http://" | trimPrefix "https://" -}}
{{- end -}}

{{- define "lfstub.clickhouse.scheme" -}}
{{- ternary "https" "http" (hasPrefix "https://" (include "lfstub.str" .Values.clickhouse.host)) -}}
{{- end -}}

{{- /* ============================================================ env blocks
  Each block helper takes the root context and prints `toYaml` of
  dict "env" (list ...); lfstub.containerEnv stitches them together.
*/ -}}

{{- define "lfstub.env.server" -}}
{{- $L := .Values.langfuse -}}
{{- $env := list -}}
{{- $env = append $env (dict "name" "NODE_ENV" "value" (include "lfstub.str" $L.nodeEnv)) -}}
{{- $env = append $env (dict "name" "LANGFUSE_LOG_LEVEL" "value" (include "lfstub.str" $L.logging.level)) -}}
{{- $env = append $env (dict "name" "LANGFUSE_LOG_FORMAT" "value" (include "lfstub.str" $L.logging.format)) -}}
{{- $env = append $env (merge (dict "name" "SALT") (include "lfstub.appSource" (dict "root" . "key" "langfuse.salt" "value" $L.salt "secretKey" "salt") | fromYaml)) -}}
{{- $env = append $env (merge (dict "name" "ENCRYPTION_KEY") (include "lfstub.appSource" (dict "root" . "key" "langfuse.encryptionKey" "value" $L.encryptionKey "secretKey" "encryption-key") | fromYaml)) -}}
{{- with (include "lfstub.source" (dict "key" "langfuse.licenseKey" "value" $L.licenseKey)) -}}
  {{- $env = append $env (merge (dict "name" "LANGFUSE_EE_LICENSE_KEY") (fromYaml .)) -}}
{{- end -}}
{{- $env = append $env (dict "name" "TELEMETRY_ENABLED" "value" (include "lfstub.str" $L.features.telemetryEnabled)) -}}
{{- $env = append $env (dict "name" "AUTH_DISABLE_SIGNUP" "value" (include "lfstub.str" $L.features.signUpDisabled)) -}}
{{- $env = append $env (dict "name" "ENABLE_EXPERIMENTAL_FEATURES" "value" (include "lfstub.str" $L.features.experimentalFeaturesEnabled)) -}}
{{- $smtp := $L.smtp | default dict -}}
{{- if $smtp.connectionUrl -}}
  {{- $env = append $env (dict "name" "SMTP_CONNECTION_URL" "value" (toString $smtp.connectionUrl)) -}}
  {{- $env = append $env (dict "name" "EMAIL_FROM_ADDRESS" "value" (required "langfuse.smtp.fromAddress has to be set if langfuse.smtp.connectionUrl is configured" $smtp.fromAddress | toString)) -}}
{{- end -}}
{{- with $L.allowedOrganizationCreators -}}
  {{- $env = append $env (dict "name" "LANGFUSE_ALLOWED_ORGANIZATION_CREATORS" "value" (join "," .)) -}}
{{- end -}}
{{- toYaml (dict "env" $env) -}}
{{- end -}}

{{- define "lfstub.env.nextauth" -}}
{{- $L := .Values.langfuse -}}
{{- $env := list -}}
{{- $env = append $env (dict "name" "NEXTAUTH_URL" "value" (include "lfstub.str" $L.nextauth.url)) -}}
{{- $env = append $env (merge (dict "name" "NEXTAUTH_SECRET") (include "lfstub.appSource" (dict "root" . "key" "langfuse.nextauth.secret" "value" $L.nextauth.secret "secretKey" "nextauth-secret") | fromYaml)) -}}
{{- $auth := $L.auth | default dict -}}
{{- if hasKey $auth "disableUsernamePassword" -}}
  {{- $env = append $env (dict "name" "AUTH_DISABLE_USERNAME_PASSWORD" "value" (include "lfstub.str" $auth.disableUsernamePassword)) -}}
{{- end -}}
{{- range $provider, $options := ($auth.providers | default dict) -}}
  {{- range $option, $setting := $options -}}
    {{- $e := dict "name" (printf "AUTH_%s_%s" ($provider | snakecase | upper) ($option | snakecase | upper)) -}}
    {{- if and $setting (kindIs "map" $setting) -}}
      {{- $e = merge $e (include "lfstub.source" (dict "key" (printf ".Values.langfuse.auth.providers.%s.%s" $provider $option) "value" $setting) | fromYaml) -}}
    {{- else if $setting -}}
      {{- $_ := set $e "value" (toString $setting) -}}
    {{- end -}}
    {{- $env = append $env $e -}}
  {{- end -}}
{{- end -}}
{{- toYaml (dict "env" $env) -}}
{{- end -}}

{{- /*
  Postgres. DATABASE_URL in langfuse.additionalEnv replaces HOST/PORT/
  USERNAME/PASSWORD; NAME, ARGS, DIRECT_URL, SHADOW_DATABASE_URL and the
  migration switch are still emitted (as the official chart does).
*/ -}}
{{- define "lfstub.env.database" -}}
{{- $pg := .Values.postgresql -}}
{{- $env := list -}}
{{- if not (include "lfstub.envHas" (dict "env" .Values.langfuse.additionalEnv "name" "DATABASE_URL")) -}}
  {{- $env = append $env (dict "name" "DATABASE_HOST" "value" (include "lfstub.str" $pg.host)) -}}
  {{- with $pg.port -}}
    {{- $env = append $env (dict "name" "DATABASE_PORT" "value" (toString .)) -}}
  {{- end -}}
  {{- with $pg.auth.username -}}
    {{- $env = append $env (dict "name" "DATABASE_USERNAME" "value" (toString .)) -}}
  {{- end -}}
  {{- if $pg.auth.existingSecret -}}
    {{- $key := required "postgresql.auth.secretKeys.userPasswordKey is required when using an existing secret" (($pg.auth.secretKeys | default dict).userPasswordKey) -}}
    {{- $env = append $env (dict "name" "DATABASE_PASSWORD" "valueFrom" (dict "secretKeyRef" (dict "name" $pg.auth.existingSecret "key" $key))) -}}
  {{- else -}}
    {{- $env = append $env (dict "name" "DATABASE_PASSWORD" "value" (required "Using an existing secret or postgresql.auth.password is required" $pg.auth.password | toString)) -}}
  {{- end -}}
{{- end -}}
{{- with $pg.auth.database -}}
  {{- $env = append $env (dict "name" "DATABASE_NAME" "value" (toString .)) -}}
{{- end -}}
{{- with $pg.args -}}
  {{- $env = append $env (dict "name" "DATABASE_ARGS" "value" (toString .)) -}}
{{- end -}}
{{- with $pg.directUrl -}}
  {{- $env = append $env (dict "name" "DIRECT_URL" "value" (toString .)) -}}
{{- end -}}
{{- with $pg.shadowDatabaseUrl -}}
  {{- $env = append $env (dict "name" "SHADOW_DATABASE_URL" "value" (toString .)) -}}
{{- end -}}
{{- $env = append $env (dict "name" "LANGFUSE_AUTO_POSTGRES_MIGRATION_DISABLED" "value" (toString (not $pg.migration.autoMigrate))) -}}
{{- toYaml (dict "env" $env) -}}
{{- end -}}

{{- /* REDIS_TLS_{CA,CERT,KEY}_PATH when TLS is on */ -}}
{{- define "lfstub.env.redisTlsPaths" -}}
{{- $tls := .Values.redis.tls -}}
{{- $env := list -}}
{{- if $tls.enabled -}}
  {{- range $var, $path := dict "REDIS_TLS_CA_PATH" $tls.caPath "REDIS_TLS_CERT_PATH" $tls.certPath "REDIS_TLS_KEY_PATH" $tls.keyPath -}}
    {{- if $path }}{{ $env = append $env (dict "name" $var "value" (toString $path)) }}{{ end -}}
  {{- end -}}
{{- end -}}
{{- toYaml (dict "env" $env) -}}
{{- end -}}

{{- /*
  Redis / Valkey: cluster, sentinel, or a standalone connection string.
  REDIS_CLUSTER_NODES / REDIS_SENTINEL_NODES / REDIS_CONNECTION_STRING in
  langfuse.additionalEnv replace the chart's block for that mode.
*/ -}}
{{- define "lfstub.env.redis" -}}
{{- $r := .Values.redis -}}
{{- $extra := .Values.langfuse.additionalEnv -}}
{{- $env := list -}}
{{- $hasPassword := or $r.auth.existingSecret $r.auth.password -}}
{{- if $hasPassword -}}
  {{- if $r.auth.existingSecret -}}
    {{- $key := required "redis.auth.existingSecretPasswordKey is required when using an existing secret" $r.auth.existingSecretPasswordKey -}}
    {{- $env = append $env (dict "name" "REDIS_PASSWORD" "valueFrom" (dict "secretKeyRef" (dict "name" $r.auth.existingSecret "key" $key))) -}}
  {{- else -}}
    {{- $env = append $env (dict "name" "REDIS_PASSWORD" "value" (toString $r.auth.password)) -}}
  {{- end -}}
{{- end -}}
{{- $tlsPaths := (include "lfstub.env.redisTlsPaths" . | fromYaml).env -}}
{{- if $r.cluster.enabled -}}
  {{- if not (include "lfstub.envHas" (dict "env" $extra "name" "REDIS_CLUSTER_NODES")) -}}
    {{- $env = append $env (dict "name" "REDIS_CLUSTER_ENABLED" "value" "true") -}}
    {{- $env = append $env (dict "name" "REDIS_CLUSTER_NODES" "value" (join "," ($r.cluster.nodes | default list))) -}}
    {{- if $hasPassword }}{{ $env = append $env (dict "name" "REDIS_AUTH" "value" "$(REDIS_PASSWORD)") }}{{ end -}}
    {{- $env = append $env (dict "name" "REDIS_TLS_ENABLED" "value" (include "lfstub.str" $r.tls.enabled)) -}}
    {{- $env = concat $env $tlsPaths -}}
  {{- end -}}
{{- else if $r.sentinel.enabled -}}
  {{- $s := $r.sentinel -}}
  {{- if not (include "lfstub.envHas" (dict "env" $extra "name" "REDIS_SENTINEL_NODES")) -}}
    {{- $env = append $env (dict "name" "REDIS_SENTINEL_ENABLED" "value" "true") -}}
    {{- $env = append $env (dict "name" "REDIS_SENTINEL_MASTER_NAME" "value" (required "redis.sentinel.masterName is required when sentinel mode is enabled" $s.masterName | toString)) -}}
    {{- $env = append $env (dict "name" "REDIS_SENTINEL_NODES" "value" (required "redis.sentinel.nodes is required when sentinel mode is enabled" $s.nodes | toString)) -}}
    {{- with $s.username }}{{ $env = append $env (dict "name" "REDIS_SENTINEL_USERNAME" "value" (toString .)) }}{{ end -}}
    {{- if $s.existingSecret -}}
      {{- $key := required "redis.sentinel.existingSecretPasswordKey is required when using an existing secret" $s.existingSecretPasswordKey -}}
      {{- $env = append $env (dict "name" "REDIS_SENTINEL_PASSWORD" "valueFrom" (dict "secretKeyRef" (dict "name" $s.existingSecret "key" $key))) -}}
    {{- else if $s.password -}}
      {{- $env = append $env (dict "name" "REDIS_SENTINEL_PASSWORD" "value" (toString $s.password)) -}}
    {{- end -}}
    {{- if $hasPassword }}{{ $env = append $env (dict "name" "REDIS_AUTH" "value" "$(REDIS_PASSWORD)") }}{{ end -}}
    {{- $env = append $env (dict "name" "REDIS_TLS_ENABLED" "value" (include "lfstub.str" $r.tls.enabled)) -}}
    {{- $env = concat $env $tlsPaths -}}
  {{- end -}}
{{- else -}}
  {{- if not (include "lfstub.envHas" (dict "env" $extra "name" "REDIS_CONNECTION_STRING")) -}}
    {{- $env = append $env (dict "name" "REDIS_TLS_ENABLED" "value" (include "lfstub.str" $r.tls.enabled)) -}}
    {{- $user := $r.auth.username | default "" | toString -}}
    {{- $userinfo := "" -}}
    {{- if $hasPassword -}}
      {{- $userinfo = printf "%s:$(REDIS_PASSWORD)@" $user -}}
    {{- else if $user -}}
      {{- $userinfo = printf "%s@" $user -}}
    {{- end -}}
    {{- $url := printf "%s://%s%s:%s/%s" (ternary "rediss" "redis" (not (not $r.tls.enabled))) $userinfo (include "lfstub.str" $r.host) (include "lfstub.str" $r.port) (include "lfstub.str" $r.auth.database) -}}
    {{- $env = append $env (dict "name" "REDIS_CONNECTION_STRING" "value" $url) -}}
  {{- end -}}
  {{- /* the TLS file paths are emitted even when the connection string comes from additionalEnv */ -}}
  {{- $env = concat $env $tlsPaths -}}
{{- end -}}
{{- toYaml (dict "env" $env) -}}
{{- end -}}

{{- /*
  ClickHouse. CLICKHOUSE_MIGRATION_URL in langfuse.additionalEnv means the
  whole ClickHouse block comes from additionalEnv.
*/ -}}
{{- define "lfstub.env.clickhouse" -}}
{{- $ch := .Values.clickhouse -}}
{{- $mig := $ch.migration | default dict -}}
{{- $env := list -}}
{{- if not (include "lfstub.envHas" (dict "env" .Values.langfuse.additionalEnv "name" "CLICKHOUSE_MIGRATION_URL")) -}}
  {{- $host := include "lfstub.clickhouse.host" . -}}
  {{- if $mig.url -}}
    {{- $env = append $env (dict "name" "CLICKHOUSE_MIGRATION_URL" "value" (toString $mig.url)) -}}
  {{- else if $ch.host -}}
    {{- $env = append $env (dict "name" "CLICKHOUSE_MIGRATION_URL" "value" (printf "clickhouse://%s:%s" $host (include "lfstub.str" $ch.nativePort))) -}}
  {{- end -}}
  {{- if hasKey $mig "ssl" -}}
    {{- $env = append $env (dict "name" "CLICKHOUSE_MIGRATION_SSL" "value" (include "lfstub.str" $mig.ssl)) -}}
  {{- end -}}
  {{- if $ch.host -}}
    {{- $env = append $env (dict "name" "CLICKHOUSE_URL" "value" (printf "%s://%s:%s" (include "lfstub.clickhouse.scheme" .) $host (include "lfstub.str" $ch.httpPort))) -}}
  {{- end -}}
  {{- if hasKey $ch "database" -}}
    {{- $env = append $env (dict "name" "CLICKHOUSE_DB" "value" (include "lfstub.str" $ch.database)) -}}
  {{- end -}}
  {{- with $ch.auth.username -}}
    {{- $env = append $env (dict "name" "CLICKHOUSE_USER" "value" (toString .)) -}}
  {{- end -}}
  {{- if $ch.auth.existingSecret -}}
    {{- $key := required "clickhouse.auth.existingSecretKey is required when using an existing secret" $ch.auth.existingSecretKey -}}
    {{- $env = append $env (dict "name" "CLICKHOUSE_PASSWORD" "valueFrom" (dict "secretKeyRef" (dict "name" $ch.auth.existingSecret "key" $key))) -}}
  {{- else if $ch.auth.password -}}
    {{- $env = append $env (dict "name" "CLICKHOUSE_PASSWORD" "value" (toString $ch.auth.password)) -}}
  {{- end -}}
  {{- /* 2.0.0: passed on whenever a host is configured */ -}}
  {{- if $ch.host -}}
    {{- $env = append $env (dict "name" "CLICKHOUSE_CLUSTER_ENABLED" "value" (include "lfstub.str" (($ch.cluster | default dict).enabled))) -}}
  {{- end -}}
  {{- if hasKey $mig "autoMigrate" -}}
    {{- $env = append $env (dict "name" "LANGFUSE_AUTO_CLICKHOUSE_MIGRATION_DISABLED" "value" (toString (not $mig.autoMigrate))) -}}
  {{- end -}}
{{- end -}}
{{- toYaml (dict "env" $env) -}}
{{- end -}}

{{- /*
  One S3 use (eventUpload | batchExport | mediaUpload): per-use settings fall
  back to the shared s3.* ones. Input: dict "root" $ "use" <name> "prefix" <ENV prefix>.
*/ -}}
{{- define "lfstub.env.s3use" -}}
{{- $s3 := .root.Values.s3 -}}
{{- $use := index $s3 .use -}}
{{- $p := .prefix -}}
{{- $env := list -}}
{{- $bucket := $use.bucket | default $s3.bucket -}}
{{- $env = append $env (dict "name" (print $p "_BUCKET") "value" (required (printf "s3.[%s].bucket is required" .use) $bucket | toString)) -}}
{{- /* the event-upload prefix has no shared fallback; the other two fall back to s3.prefix */ -}}
{{- $prefix := ternary $use.prefix ($use.prefix | default $s3.prefix) (eq .use "eventUpload") -}}
{{- with $prefix }}{{ $env = append $env (dict "name" (print $p "_PREFIX") "value" (toString .)) }}{{ end -}}
{{- with ($use.region | default $s3.region) }}{{ $env = append $env (dict "name" (print $p "_REGION") "value" (toString .)) }}{{ end -}}
{{- with ($use.endpoint | default $s3.endpoint) }}{{ $env = append $env (dict "name" (print $p "_ENDPOINT") "value" (toString .)) }}{{ end -}}
{{- range $field, $suffix := dict "accessKeyId" "_ACCESS_KEY_ID" "secretAccessKey" "_SECRET_ACCESS_KEY" -}}
  {{- $src := include "lfstub.source" (dict "key" (printf ".Values.s3.%s.%s" $.use $field) "value" (index $use $field)) -}}
  {{- if not $src -}}
    {{- $src = include "lfstub.source" (dict "key" (printf ".Values.s3.%s" $field) "value" (index $s3 $field)) -}}
  {{- end -}}
  {{- if $src -}}
    {{- $env = append $env (merge (dict "name" (print $p $suffix)) (fromYaml $src)) -}}
  {{- end -}}
{{- end -}}
{{- if or (hasKey $use "forcePathStyle") (hasKey $s3 "forcePathStyle") -}}
  {{- $env = append $env (dict "name" (print $p "_FORCE_PATH_STYLE") "value" (include "lfstub.str" ($use.forcePathStyle | default $s3.forcePathStyle))) -}}
{{- end -}}
{{- toYaml (dict "env" $env) -}}
{{- end -}}

{{- define "lfstub.env.s3" -}}
{{- $s3 := .Values.s3 -}}
{{- $env := list -}}
{{- if eq $s3.storageProvider "azure" -}}
  {{- $env = append $env (dict "name" "LANGFUSE_USE_AZURE_BLOB" "value" "true") -}}
{{- else if eq $s3.storageProvider "gcs" -}}
  {{- $env = append $env (dict "name" "LANGFUSE_USE_GOOGLE_CLOUD_STORAGE" "value" "true") -}}
  {{- with (include "lfstub.source" (dict "key" ".Values.s3.gcs.credentials" "value" (($s3.gcs | default dict).credentials))) -}}
    {{- $env = append $env (merge (dict "name" "LANGFUSE_GOOGLE_CLOUD_STORAGE_CREDENTIALS") (fromYaml .)) -}}
  {{- end -}}
{{- end -}}
{{- $env = concat $env (include "lfstub.env.s3use" (dict "root" . "use" "eventUpload" "prefix" "LANGFUSE_S3_EVENT_UPLOAD") | fromYaml).env -}}
{{- $env = append $env (dict "name" "LANGFUSE_S3_BATCH_EXPORT_ENABLED" "value" (include "lfstub.str" $s3.batchExport.enabled)) -}}
{{- if $s3.batchExport.enabled -}}
  {{- $env = concat $env (include "lfstub.env.s3use" (dict "root" . "use" "batchExport" "prefix" "LANGFUSE_S3_BATCH_EXPORT") | fromYaml).env -}}
{{- end -}}
{{- /* media upload vars are emitted even when mediaUpload.enabled is false (official behaviour) */ -}}
{{- $env = concat $env (include "lfstub.env.s3use" (dict "root" . "use" "mediaUpload" "prefix" "LANGFUSE_S3_MEDIA_UPLOAD") | fromYaml).env -}}
{{- $env = append $env (dict "name" "LANGFUSE_S3_MEDIA_UPLOAD_MAX_CONTENT_LENGTH" "value" (include "lfstub.str" $s3.mediaUpload.maxContentLength)) -}}
{{- $env = append $env (dict "name" "LANGFUSE_S3_MEDIA_UPLOAD_DOWNLOAD_URL_EXPIRY_SECONDS" "value" (include "lfstub.str" $s3.mediaUpload.downloadUrlExpirySeconds)) -}}
{{- $conc := $s3.concurrency | default dict -}}
{{- if hasKey $conc "reads" }}{{ $env = append $env (dict "name" "LANGFUSE_S3_CONCURRENT_READS" "value" (include "lfstub.str" $conc.reads)) }}{{ end -}}
{{- if hasKey $conc "writes" }}{{ $env = append $env (dict "name" "LANGFUSE_S3_CONCURRENT_WRITES" "value" (include "lfstub.str" $conc.writes)) }}{{ end -}}
{{- toYaml (dict "env" $env) -}}
{{- end -}}

{{- /*
  Full container env for a component: chart env, PORT (web), HOSTNAME
  (unless given), then langfuse.additionalEnv + langfuse.<component>.pod.additionalEnv.
  Input: dict "root" $ "component" "web"|"worker". Prints a YAML list.
*/ -}}
{{- define "lfstub.containerEnv" -}}
{{- $root := .root -}}
{{- $comp := index $root.Values.langfuse .component -}}
{{- $env := list -}}
{{- range $block := list "server" "nextauth" "database" "redis" "clickhouse" "s3" -}}
  {{- $env = concat $env (include (printf "lfstub.env.%s" $block) $root | fromYaml).env -}}
{{- end -}}
{{- if eq .component "web" -}}
  {{- $env = append $env (dict "name" "PORT" "value" (include "lfstub.str" $comp.service.port)) -}}
{{- end -}}
{{- $extra := concat ($root.Values.langfuse.additionalEnv | default list) ((($comp.pod | default dict).additionalEnv) | default list) -}}
{{- if not (include "lfstub.envHas" (dict "env" $extra "name" "HOSTNAME")) -}}
  {{- $env = append $env (dict "name" "HOSTNAME" "value" "0.0.0.0") -}}
{{- end -}}
{{- toYaml (concat $env $extra) -}}
{{- end -}}

{{- /* --------------------------------------------------------- preflight
  1. The official 2.0.0 upgrade guard: on `helm upgrade`, refuse to replace
     stores a v1 (Bitnami) release left behind unless langfuse.allowV1Upgrade.
  2. The stand-in guard: no *.deploy may be true (nothing is bundled).
*/ -}}
{{- define "lfstub.noBundledStores" -}}
{{- if and .Release.IsUpgrade (not .Values.langfuse.allowV1Upgrade) -}}
  {{- $fullname := include "lfstub.fullname" . -}}
  {{- $ns := .Release.Namespace -}}
  {{- $leftovers := list -}}
  {{- range $probe := list
      (list "clickhouse" "apps/v1" "StatefulSet" (printf "%s-clickhouse-shard0" $fullname) "Bitnami ClickHouse")
      (list "postgresql" "v1" "PersistentVolumeClaim" (printf "data-%s-postgresql-0" $fullname) "Bitnami PostgreSQL")
      (list "s3" "apps/v1" "Deployment" (printf "%s-s3" $fullname) "Bitnami MinIO") -}}
    {{- if and (index $.Values (index $probe 0)).deploy (lookup (index $probe 1) (index $probe 2) $ns (index $probe 3)) -}}
      {{- $leftovers = append $leftovers (printf "%s/%s (%s)" (index $probe 2) (index $probe 3) (index $probe 4)) -}}
    {{- end -}}
  {{- end -}}
  {{- if $leftovers -}}
    {{- fail (printf "Refusing to helm upgrade: found v1 Bitnami resources in namespace %q that this release would replace with empty v2 volumes: %s. Follow examples/upgrade-v1-to-v2 (in-place only when stores are external; otherwise install a sibling v2 release). To override this guard (unsafe), set langfuse.allowV1Upgrade=true." $ns (join ", " $leftovers)) -}}
  {{- end -}}
{{- end -}}
{{- $deployed := list -}}
{{- range $store := list "postgresql" "redis" "clickhouse" "s3" -}}
  {{- if (index $.Values $store).deploy }}{{ $deployed = append $deployed (printf "%s.deploy" $store) }}{{ end -}}
{{- end -}}
{{- if $deployed -}}
  {{- fail (printf "langfuse TEST STAND-IN chart %s bundles no sub-charts, but %s is true. Set every *.deploy to false and point host/credentials at external services." .Chart.Version (join ", " $deployed)) -}}
{{- end -}}
{{- end -}}
