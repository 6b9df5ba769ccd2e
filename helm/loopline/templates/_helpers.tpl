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

{{/* The chart's MLflow: its Service's URI as every pod in the cluster reaches it. */}}
{{- define "loopline.mlflowServiceUri" -}}
{{- printf "http://%s.%s.svc:%d" (include "loopline.componentName" (list . "mlflow")) .Release.Namespace (int .Values.mlflow.port) -}}
{{- end -}}

{{/* The tracking URI of the operator and the monitor: the chart's MLflow when it runs one. */}}
{{- define "loopline.mlflowTrackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{- include "loopline.mlflowServiceUri" . -}}
{{- else -}}
{{- required "backends.mlflow.trackingUri is required: the MLflow tracking server URI" .Values.backends.mlflow.trackingUri -}}
{{- end -}}
{{- end -}}

{{/* The tracking URI of the pods the operator creates; empty: the operator's own. */}}
{{- define "loopline.mlflowClusterTrackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{- include "loopline.mlflowServiceUri" . -}}
{{- else -}}
{{- .Values.backends.mlflow.clusterTrackingUri -}}
{{- end -}}
{{- end -}}

{{/* The operator's pipeline backend by name; an explicit kfp needs backends.kfp. */}}
{{- define "loopline.pipelineBackend" -}}
{{- $b := .Values.backends -}}
{{- $name := $b.pipelines | default (ternary "kfp" "local" $b.kfp.enabled) -}}
{{- if and (eq $name "kfp") (not $b.kfp.enabled) -}}
{{- fail "backends.pipelines is kfp: set backends.kfp.enabled=true and backends.kfp.endpoint" -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* The operator's serving backend by name; seldon needs backends.seldon.enabled, which also
grants the operator Seldon's objects. */}}
{{- define "loopline.servingBackend" -}}
{{- $b := .Values.backends -}}
{{- $name := $b.serving | default (ternary "seldon" "local" $b.seldon.enabled) -}}
{{- if and (eq $name "seldon") (not $b.seldon.enabled) -}}
{{- fail "backends.serving is seldon: set backends.seldon.enabled=true (it also grants the operator Seldon's objects)" -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* Where the Feast repository is when it lives on the chart's claim (feast.enabled): a
directory below the mount, so a filesystem's lost+found is not part of the repository. */}}
{{- define "loopline.feastMountPath" -}}/var/lib/loopline-feast{{- end -}}

{{- define "loopline.featureRepo" -}}
{{- if .Values.feast.enabled -}}
{{- include "loopline.feastMountPath" . }}/feature_repo
{{- else -}}
/opt/loopline/feature_repo
{{- end -}}
{{- end -}}

{{/* The init container that gives a fresh hostPath volume to uid 10001 (volumePermissions):
root with CAP_CHOWN only, nothing else runs in it. Call with (list $ "volume" "/mount/path"). */}}
{{- define "loopline.volumePermissionsInit" -}}
{{- $root := index . 0 -}}
- name: volume-permissions
  image: {{ include "loopline.image" (list $root $root.Values.runtime.image) }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["chown", "10001:10001", {{ index . 2 | quote }}]
  securityContext:
    runAsUser: 0
    runAsNonRoot: false
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    privileged: false
    capabilities:
      drop: ["ALL"]
      add: ["CHOWN"]
    seccompProfile:
      type: RuntimeDefault
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {cpu: 100m, memory: 64Mi}
  volumeMounts:
    - name: {{ index . 1 }}
      mountPath: {{ index . 2 }}
{{- end -}}

{{/* MLflow settings and credentials, shared by the operator and the monitor. */}}
{{- define "loopline.backendEnv" -}}
{{- $root := . -}}
{{- $b := $root.Values.backends }}
{{- $trackingUri := include "loopline.mlflowTrackingUri" $root }}
- name: LOOPLINE_MLFLOW_TRACKING_URI
  value: {{ $trackingUri | quote }}
{{- /* MLflow's own variable too, for code that calls MLflow without Loopline's settings. */}}
- name: MLFLOW_TRACKING_URI
  value: {{ $trackingUri | quote }}
- name: LOOPLINE_STATE_DIR
  value: /var/lib/loopline
- name: LOOPLINE_CACHE_DIR
  value: /tmp/loopline-cache
- name: HOME
  value: /tmp
{{- /* Credentials only for the chosen auth, and the chosen auth must have them: an MLflow
behind authentication is the default, and `none` is said out loud. */}}
{{- if and $root.Values.mlflow.enabled (ne $b.mlflow.auth "none") }}
{{- fail (printf "mlflow.enabled runs MLflow without a login (the runtime image has no Flask-WTF, which MLflow's basic-auth app needs), so no credentials would be checked: set backends.mlflow.auth=none (its NetworkPolicy admits only Loopline's pods; see docs/platform-services.md), or turn mlflow.enabled off and point backends.mlflow at your MLflow; auth is %s" $b.mlflow.auth) }}
{{- end }}
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

{{/* The model servers' token-review ServiceAccount: <fullname>-model-server. */}}
{{- define "loopline.modelServerServiceAccountName" -}}
{{- include "loopline.componentName" (list . "model-server") -}}
{{- end -}}

{{/* The namespaces where the chart makes the model servers' ServiceAccount, as a JSON list;
"[]" when it makes none: modelServer.tokenReview off, no RBAC, no operator, or a serving
backend other than `kubernetes` (whose pods are the only ones the operator runs as it).
Namespaced installs: the watched namespaces; cluster-wide: modelServer.tokenReview.namespaces,
else the release namespace. */}}
{{- define "loopline.modelServerNamespaces" -}}
{{- $review := .Values.modelServer.tokenReview -}}
{{- if and $review.enabled .Values.rbac.create .Values.operator.enabled (eq (include "loopline.servingBackend" .) "kubernetes") -}}
{{- if not .Values.rbac.clusterWide -}}
{{- include "loopline.watchNamespaces" . -}}
{{- else if $review.namespaces -}}
{{- $review.namespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}
