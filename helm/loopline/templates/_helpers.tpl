{{/* Names, labels and the pieces every workload shares. */}}

{{- define "loopline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "loopline.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", e.g. loopline-operator. Call with (list $ "operator"). */}}
{{- define "loopline.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "loopline.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "loopline.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "loopline.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Labels of every object; call with (list $ "component"). */}}
{{- define "loopline.labels" -}}
{{- $root := index . 0 -}}
{{ include "loopline.selectorLabels" . }}
app.kubernetes.io/part-of: loopline
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* "<registry>/<repository>:<tag>"; call with (list $ .Values.operator.image). */}}
{{- define "loopline.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $tag := $image.tag | default $root.Values.image.tag | default $root.Chart.AppVersion -}}
{{- if $root.Values.image.registry -}}
{{- printf "%s/%s:%s" $root.Values.image.registry $image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "loopline.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- .Values.operator.serviceAccount.name | default (include "loopline.componentName" (list . "operator")) -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches in namespaced mode, as a JSON list. */}}
{{- define "loopline.watchNamespaces" -}}
{{- if .Values.rbac.watchNamespaces -}}
{{- .Values.rbac.watchNamespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}

{{/* Hardened pod security context, the same for every Loopline pod. */}}
{{- define "loopline.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "loopline.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* One env entry read from a Secret; call with (list "ENV_NAME" {secretName, key}). */}}
{{- define "loopline.secretEnv" -}}
{{- $name := index . 0 -}}
{{- $ref := index . 1 -}}
{{- if $ref.secretName }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secretName }}
      key: {{ $ref.key }}
{{- end -}}
{{- end -}}

{{/* MLflow settings and credentials, shared by the operator and the monitor. */}}
{{- define "loopline.backendEnv" -}}
{{- $root := . -}}
{{- $b := $root.Values.backends }}
- name: LOOPLINE_MLFLOW_TRACKING_URI
  value: {{ required "backends.mlflow.trackingUri is required: the MLflow tracking server URI" $b.mlflow.trackingUri | quote }}
{{- /* MLflow's own variable too, for code that calls MLflow without Loopline's settings. */}}
- name: MLFLOW_TRACKING_URI
  value: {{ $b.mlflow.trackingUri | quote }}
- name: LOOPLINE_STATE_DIR
  value: /var/lib/loopline
- name: LOOPLINE_CACHE_DIR
  value: /tmp/loopline-cache
- name: HOME
  value: /tmp
{{- /* Credentials only for the chosen auth, and the chosen auth must have them: an MLflow
behind authentication is the default, and `none` is said out loud. */}}
{{- if eq $b.mlflow.auth "basic" }}
{{- if not (and $b.mlflow.username.secretName $b.mlflow.password.secretName) }}
{{- fail "backends.mlflow.auth is basic: set backends.mlflow.username.secretName and backends.mlflow.password.secretName (a Secret with the MLflow user's name and password), or choose auth token or none" }}
{{- end }}
{{- include "loopline.secretEnv" (list "MLFLOW_TRACKING_USERNAME" $b.mlflow.username) }}
{{- include "loopline.secretEnv" (list "MLFLOW_TRACKING_PASSWORD" $b.mlflow.password) }}
{{- else if eq $b.mlflow.auth "token" }}
{{- if not $b.mlflow.token.secretName }}
{{- fail "backends.mlflow.auth is token: set backends.mlflow.token.secretName (a Secret with the bearer token), or choose auth basic or none" }}
{{- end }}
{{- include "loopline.secretEnv" (list "MLFLOW_TRACKING_TOKEN" $b.mlflow.token) }}
{{- end }}
{{- if $b.mlflow.s3.endpointUrl }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ $b.mlflow.s3.endpointUrl | quote }}
{{- end }}
{{- include "loopline.secretEnv" (list "AWS_ACCESS_KEY_ID" $b.mlflow.s3.accessKeyId) }}
{{- include "loopline.secretEnv" (list "AWS_SECRET_ACCESS_KEY" $b.mlflow.s3.secretAccessKey) }}
{{- range $root.Values.extraSecretEnv }}
{{- include "loopline.secretEnv" (list .name .) }}
{{- end }}
{{- end -}}

{{/* Egress allowed when networkPolicy.egress.restrict: DNS, the API server, then egress.to. */}}
{{- define "loopline.egressRules" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
- ports:
    {{- range .Values.networkPolicy.egress.apiServerPorts }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with .Values.networkPolicy.egress.apiServerCIDRs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- with .Values.networkPolicy.egress.to }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pods besides a Model's model servers that may connect to its drift monitor, as a JSON
list of NetworkPolicyPeers for the operator (LOOPLINE_OPERATOR_MONITOR_INGRESS_PEERS): the
operator (status, reference) and Prometheus (metrics), each with its namespace named exactly
and a non-empty pod selector. */}}
{{- define "loopline.monitorIngressPeers" -}}
{{- $np := .Values.networkPolicy -}}
{{- $peers := list -}}
{{- if .Values.operator.enabled -}}
{{- $peers = append $peers (dict
  "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace))
  "podSelector" (dict "matchLabels" (include "loopline.selectorLabels" (list . "operator") | fromYaml))) -}}
{{- end -}}
{{- if $np.prometheus.namespace -}}
{{- $peers = append $peers (dict
  "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" $np.prometheus.namespace))
  "podSelector" (dict "matchLabels" (required "networkPolicy.prometheus.podLabels needs at least one label: an empty selector admits every pod" $np.prometheus.podLabels))) -}}
{{- end -}}
{{- $peers | toJson -}}
{{- end -}}
