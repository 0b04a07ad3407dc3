{{/* Names, labels and the pieces every component's manifests share. */}}

{{- define "microcommerce.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "microcommerce.fullname" -}}
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

{{/* The components, in one place: the image's command and whether it speaks gRPC. */}}
{{- define "microcommerce.components" -}}
gateway: {grpc: false}
payment: {grpc: true}
product: {grpc: true}
user: {grpc: true}
{{- end }}

{{/* The gRPC service each probe asks grpc.health.v1 about (registered by create_server). */}}
{{- define "microcommerce.grpcHealthService" -}}
{{- get (dict "payment" "microcommerce.payment.v1.PaymentService" "product" "microcommerce.product.v1.ProductService" "user" "microcommerce.user.v1.UserService") . }}
{{- end }}

{{/* Who calls whom over gRPC (tests/deploy/chart_facts.py holds the same graph). */}}
{{- define "microcommerce.callers" -}}
payment: [gateway]
product: [gateway, payment]
user: [gateway, payment, product]
{{- end }}
{{- define "microcommerce.callees" -}}
gateway: [payment, product, user]
payment: [product, user]
product: [user]
user: []
{{- end }}

{{- define "microcommerce.componentName" -}}
{{- printf "%s-%s" (include "microcommerce.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "microcommerce.selectorLabels" -}}
app.kubernetes.io/name: {{ include "microcommerce.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "microcommerce.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "microcommerce.selectorLabels" . }}
app.kubernetes.io/part-of: microcommerce
app.kubernetes.io/version: {{ include "microcommerce.tag" (dict "root" .root "component" .component) | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "microcommerce.tag" -}}
{{- $own := dict }}
{{- if hasKey .root.Values .component }}{{ $own = (get .root.Values .component).image | default dict }}{{ end }}
{{- $own.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end }}

{{- define "microcommerce.image" -}}
{{- $own := dict }}
{{- if hasKey .root.Values .component }}{{ $own = (get .root.Values .component).image | default dict }}{{ end }}
{{- $repository := $own.repository | default .root.Values.image.repository }}
{{- printf "%s:%s" $repository (include "microcommerce.tag" .) }}
{{- end }}

{{- define "microcommerce.pullPolicy" -}}
{{- $own := dict }}
{{- if hasKey .root.Values .component }}{{ $own = (get .root.Values .component).image | default dict }}{{ end }}
{{- $own.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end }}

{{- define "microcommerce.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "microcommerce.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "microcommerce.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "microcommerce.fullname" .)) }}
{{- end }}

{{/* Migrations run in the hook Job only when they reach shared databases. */}}
{{- define "microcommerce.migrateInJob" -}}
{{- if and .Values.migrations.job.enabled (or .Values.secrets.existingSecret (and .Values.payment.databaseUrl .Values.product.databaseUrl .Values.user.databaseUrl)) }}true{{ end }}
{{- end }}

{{/* The gRPC target of a service: its headless Service through DNS, so the gateway's round
robin reaches every ready replica. */}}
{{- define "microcommerce.grpcTarget" -}}
{{- printf "dns:///%s-headless.%s.svc:%v" (include "microcommerce.componentName" .) .root.Release.Namespace (get .root.Values .component).port }}
{{- end }}

{{/* A secret key as an environment variable; optional keys may be absent from the Secret. */}}
{{- define "microcommerce.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "microcommerce.secretName" .root }}
      key: {{ .name }}
      optional: {{ .optional | default false }}
{{- end }}

{{- define "microcommerce.podSecurity" -}}
automountServiceAccountToken: false
serviceAccountName: {{ include "microcommerce.serviceAccountName" . }}
securityContext:
  {{- toYaml .Values.common.podSecurityContext | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/* The writable volumes: /tmp and the data dir, both emptyDir (the root FS is read-only). */}}
{{- define "microcommerce.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.common.tmpSizeLimit }}
- name: data
  emptyDir:
    sizeLimit: {{ .Values.common.dataSizeLimit }}
{{- end }}

{{- define "microcommerce.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /data
{{- end }}
