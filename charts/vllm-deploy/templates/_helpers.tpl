{{/*
Names, labels and derived values. What the project decides in Python (GPU table, secret flags and
keys) is in _generated.tpl, written by `make generate`. Every object name is prefixed with the release name, as the
Pulumi component prefixes them with `kubernetes.releaseName` (components/manifests.py `Names`).
*/}}

{{/* The prefix of every object's name: `<release>`, `<release>-wrapper`, `<release>-secrets`, … */}}
{{- define "vllm-deploy.fullname" -}}
{{- .Release.Name | trunc 53 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret vLLM and the wrapper read: an existing one by name, or `<release>-secrets`. */}}
{{- define "vllm-deploy.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "vllm-deploy.fullname" .)) -}}
{{- end -}}

{{/* vLLM's in-cluster URL, as the wrapper reaches it. */}}
{{- define "vllm-deploy.vllmUrl" -}}
{{- $fullname := include "vllm-deploy.fullname" . -}}
{{- $replicas := int (.Values.vllm.replicas | default 1) -}}
{{- if include "vllm-deploy.autoscales" . -}}
{{- /* Every replica the range allows: a pod not created yet has no DNS record and is routed around. */ -}}
{{- $replicas = int .Values.vllm.autoscale.maxReplicas -}}
{{- end -}}
{{- if le $replicas 1 -}}
{{- printf "http://%s.%s.svc.cluster.local:8000/v1" $fullname .Release.Namespace -}}
{{- else -}}
{{- /* Several replicas: each pod by its DNS name under the headless Service (as manifests.Names.vllm_urls). */ -}}
{{- $urls := list -}}
{{- range $i := until $replicas -}}
{{- $urls = append $urls (printf "http://%s-%d.%s-headless.%s.svc.cluster.local:8000/v1" $fullname $i $fullname $.Release.Namespace) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}
{{- end -}}

{{/* "true" when vLLM autoscales between vllm.autoscale.minReplicas and maxReplicas (the stack's `vllm.replicas: {min, max}`). */}}
{{- define "vllm-deploy.autoscales" -}}
{{- with .Values.vllm.autoscale -}}
{{- if not (kindIs "invalid" .maxReplicas) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when the wrapper owns vLLM's replica count (scale-to-zero, autoscaling, or both): it gets the scaler's RBAC and settings. */}}
{{- define "vllm-deploy.wrapperScales" -}}
{{- if or (gt (int .Values.idleTimeout) 0) (include "vllm-deploy.autoscales" .) -}}true{{- end -}}
{{- end -}}

{{/* The name clients send as "model": servedName, or the id's last path part, lower-cased. */}}
{{- define "vllm-deploy.servedName" -}}
{{- .Values.model.servedName | default (splitList "/" .Values.model.id | last | lower) -}}
{{- end -}}

{{/* app.kubernetes.io/version: the vLLM image's tag (or its digest, shortened). */}}
{{- define "vllm-deploy.version" -}}
{{- $image := .Values.vllm.image -}}
{{- if contains "@" $image -}}
{{- splitList "@" $image | last | trunc 63 | replace ":" "-" -}}
{{- else -}}
{{- splitList ":" $image | last -}}
{{- end -}}
{{- end -}}

{{/* vLLM's tensor parallel size: the GPU count, or 1 on CPU. */}}
{{- define "vllm-deploy.tensorParallelSize" -}}
{{- if eq .Values.gpu.type (include "vllm-deploy.cpuType" .) -}}1{{- else -}}{{ .Values.gpu.count | int }}{{- end -}}
{{- end -}}

{{/*
Selector labels; call with (dict "ctx" $ "component" "vllm").
*/}}
{{- define "vllm-deploy.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
All labels of an object; call with (dict "ctx" $ "component" "vllm").
*/}}
{{- define "vllm-deploy.labels" -}}
{{ include "vllm-deploy.selectorLabels" . }}
{{- if not .unversioned }}
app.kubernetes.io/version: {{ include "vllm-deploy.version" .ctx | quote }}
{{- end }}
app.kubernetes.io/part-of: vllm-deploy
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
metadata of a namespaced object; call with (dict "ctx" $ "component" "vllm" "name" "…").
*/}}
{{- define "vllm-deploy.metadata" -}}
name: {{ .name }}
namespace: {{ .ctx.Release.Namespace }}
labels:
  {{- include "vllm-deploy.labels" . | nindent 2 }}
{{- end -}}

{{/*
The model cache's claim template, named by size and class: a change to either replaces the
StatefulSet with one whose pods get new, right-sized claims (components/manifests.py).
*/}}
{{- define "vllm-deploy.cacheClaimName" -}}
{{- $name := printf "model-cache-%s" (.Values.kubernetes.cache.size | default "200Gi" | lower | replace "." "-") -}}
{{- with include "vllm-deploy.cacheStorageClass" . -}}
{{- $name = printf "%s-%s" $name (sha256sum . | trunc 6) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* The GPU pool preset in force: kubernetes.gpuPool's, else none when kubernetes.nodeSelector
replaces it, else the default; empty on CPU (components/gpu_pool.py preset_of). */}}
{{- define "vllm-deploy.gpuPoolPreset" -}}
{{- if ne .Values.gpu.type (include "vllm-deploy.cpuType" .) -}}
{{- with .Values.kubernetes.gpuPool -}}
{{- .preset -}}
{{- else -}}
{{- if not .Values.kubernetes.nodeSelector -}}{{ include "vllm-deploy.defaultGpuPool" $ }}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* vLLM's node labels → the values any one of which will do, as JSON (components/gpu_pool.py node_labels):
the preset's, then kubernetes.nodeSelector's on top; kubernetes.nodeSelector alone replaces the default. */}}
{{- define "vllm-deploy.nodeLabels" -}}
{{- $labels := dict -}}
{{- $pool := .Values.kubernetes.gpuPool -}}
{{- $preset := include "vllm-deploy.gpuPoolPreset" . -}}
{{- if and $pool (eq $preset "nodeGroup") -}}
{{- $labels = dict $pool.label (list $pool.value) -}}
{{- else if $preset -}}
{{- $forGpu := get (include "vllm-deploy.gpuPoolLabels" . | fromJson) .Values.gpu.type -}}
{{- $labels = get $forGpu $preset | default dict -}}
{{- end -}}
{{- range $key, $value := .Values.kubernetes.nodeSelector -}}
{{- $_ := set $labels $key (list $value) -}}
{{- end -}}
{{- $labels | toJson -}}
{{- end -}}

{{/* The cache's StorageClass: kubernetes.cache.storageClass, else the preset's default, else none. */}}
{{- define "vllm-deploy.cacheStorageClass" -}}
{{- $defaults := get (include "vllm-deploy.gpuPoolStorage" . | fromJson) "default" -}}
{{- .Values.kubernetes.cache.storageClass | default (get $defaults (include "vllm-deploy.gpuPoolPreset" .)) -}}
{{- end -}}

{{/*
Rolls the pods when what they read changes but their spec does not: the Secret the chart creates
(or the name of the one it references).
*/}}
{{- define "vllm-deploy.configChecksum" -}}
{{- $secret := include (print .Template.BasePath "/secret.yaml") . -}}
{{- list $secret (include "vllm-deploy.secretName" .) | toJson | sha256sum -}}
{{- end -}}

{{/* Checks the schema cannot express; fails the render with the key to fix. */}}
{{- define "vllm-deploy.validate" -}}
{{- with .Values.kubernetes.releaseName -}}
{{- if ne . $.Release.Name -}}
{{- fail (printf "kubernetes.releaseName: these values are for the release %q, not %q; install as `helm install %s …` or remove the key" . $.Release.Name .) -}}
{{- end -}}
{{- end -}}
{{- with .Values.kubernetes.namespace -}}
{{- if ne . $.Release.Namespace -}}
{{- fail (printf "kubernetes.namespace: these values are for the namespace %q, not %q; install with `-n %s` or remove the key" . $.Release.Namespace .) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.secrets.create .Values.secrets.existingSecret -}}
{{- fail "secrets.existingSecret: cannot be combined with secrets.create: true; either reference a Secret or let the chart create one" -}}
{{- end -}}
{{- range $key, $image := dict "vllm.image" .Values.vllm.image "wrapper.image" .Values.wrapper.image -}}
{{- if hasSuffix ":latest" $image -}}
{{- fail (printf "%s: %q is not pinned; give a version tag or a digest, never latest" $key $image) -}}
{{- end -}}
{{- end -}}
{{- $secretFlags := include "vllm-deploy.secretFlags" . | fromJsonArray -}}
{{- range .Values.vllm.extraArgs -}}
{{- /* vLLM reads `--api_key` as `--api-key`: compare the normalised spelling. */ -}}
{{- $flag := splitList "=" (toString .) | first | replace "_" "-" -}}
{{- if has $flag $secretFlags -}}
{{- fail (printf "vllm.extraArgs: %s must not be passed as an argument (it would show in `ps` and in the pod spec); set secrets.vllmApiKey / secrets.hfToken or the existing Secret instead" $flag) -}}
{{- end -}}
{{- end -}}
{{- with .Values.kubernetes.gpuPool -}}
{{- if eq $.Values.gpu.type (include "vllm-deploy.cpuType" $) -}}
{{- fail "kubernetes.gpuPool: vLLM runs on CPU (gpu.type none); remove gpuPool, or use kubernetes.nodeSelector" -}}
{{- end -}}
{{- if eq .preset "nodeGroup" -}}
{{- range $key := list "label" "value" -}}
{{- if not (get $.Values.kubernetes.gpuPool $key) -}}
{{- fail (printf "kubernetes.gpuPool.%s: required with preset nodeGroup: the node label every node of the GPU group carries and its value, e.g. label: eks.amazonaws.com/nodegroup (EKS) or kubernetes.azure.com/agentpool (AKS)" $key) -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- if or .label .value -}}
{{- fail (printf "kubernetes.gpuPool.label: only with preset nodeGroup; remove label and value for %s" .preset) -}}
{{- end -}}
{{- if not (hasKey (get (include "vllm-deploy.gpuPoolLabels" $ | fromJson) $.Values.gpu.type) .preset) -}}
{{- fail (printf "kubernetes.gpuPool.preset: %s clusters offer no %s nodes; pick another gpu.type, or preset nodeGroup or gfd" .preset $.Values.gpu.type) -}}
{{- end -}}
{{- end -}}
{{- if and (has .preset (get (include "vllm-deploy.gpuPoolStorage" $ | fromJson) "required")) (not $.Values.kubernetes.cache.storageClass) -}}
{{- fail (printf "kubernetes.cache.storageClass: required with kubernetes.gpuPool.preset %s: EKS 1.30 and later mark no StorageClass default, so the cache claim would stay Pending; set one `kubectl get storageclass` lists, e.g. gp3" .preset) -}}
{{- end -}}
{{- end -}}
{{- with .Values.vllm.autoscale -}}
{{- /* As components/config.py validates `vllm.replicas: {min, max}` against idleTimeout. */ -}}
{{- if ne (kindIs "invalid" .minReplicas) (kindIs "invalid" .maxReplicas) -}}
{{- fail "vllm.autoscale: set both minReplicas and maxReplicas (a range), or neither (a fixed vllm.replicas)" -}}
{{- end -}}
{{- if include "vllm-deploy.autoscales" $ -}}
{{- $min := int .minReplicas -}}
{{- $max := int .maxReplicas -}}
{{- if lt $max $min -}}
{{- fail (printf "vllm.autoscale.maxReplicas: %d is below vllm.autoscale.minReplicas %d; raise max or lower min" $max $min) -}}
{{- end -}}
{{- $scalesToZero := gt (int $.Values.idleTimeout) 0 -}}
{{- if and (eq $min 0) (not $scalesToZero) -}}
{{- fail "vllm.autoscale.minReplicas: 0 scales to zero, which needs an idleTimeout (e.g. 900); or use minReplicas: 1" -}}
{{- end -}}
{{- if and (ge $min 1) $scalesToZero -}}
{{- fail (printf "idleTimeout: scales to zero, below vllm.autoscale.minReplicas %d; use minReplicas: 0, or idleTimeout: 0" $min) -}}
{{- end -}}
{{- if ne (int $.Values.vllm.replicas) (max $min 1 | int) -}}
{{- fail (printf "vllm.replicas: with vllm.autoscale it is the count the StatefulSet starts with and a wake restores, max(minReplicas, 1); set vllm.replicas: %d" (max $min 1 | int)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if lt (int .Values.wrapper.replicas.max) (int .Values.wrapper.replicas.min) -}}
{{- fail (printf "wrapper.replicas.max: %d must be >= wrapper.replicas.min (%d)" (int .Values.wrapper.replicas.max) (int .Values.wrapper.replicas.min)) -}}
{{- end -}}
{{- end -}}

{{/*
checkov skip annotations (`checkov.io/skipN: CHECK=reason`), numbered in the order of the check
ids as manifests.py numbers them; call with a dict of check id → reason.
*/}}
{{- define "vllm-deploy.checkovSkips" -}}
{{- $skips := . -}}
{{- range $i, $check := keys $skips | sortAlpha }}
checkov.io/skip{{ add1 $i }}: {{ printf "%s=%s" $check (get $skips $check) | quote }}
{{- end -}}
{{- end -}}

{{/* The checkov checks a pinned image cannot meet, and why; call with the image. */}}
{{- define "vllm-deploy.imageSkips" -}}
# Pinned tags never move, and re-pulling a 10 GB image on every wake would cost minutes.
CKV_K8S_15: pinned image tags are pulled IfNotPresent
# vLLM and the wrapper read their keys from the environment (VLLM_API_KEY, HF_TOKEN).
CKV_K8S_35: the server reads its keys from environment variables
{{- if not (contains "@sha256:" .) }}
CKV_K8S_43: "pinned by version tag; set the image to a @sha256 digest to pin by content"
{{- end }}
{{- end -}}
