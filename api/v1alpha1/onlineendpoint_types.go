package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AuthMode says how clients authenticate to an endpoint.
// +kubebuilder:validation:Enum=key;none
type AuthMode string

// Auth modes.
const (
	// AuthModeKey requires one of the endpoint's two keys as a bearer token
	// (Authorization: Bearer <key>), as Azure ML's key auth does.
	AuthModeKey AuthMode = "key"
	// AuthModeNone lets anyone who reaches the endpoint call it.
	AuthModeNone AuthMode = "none"
)

// ScaleType says who sets a deployment's number of instances.
// +kubebuilder:validation:Enum=default;target_utilization
type ScaleType string

// Scale types, as Azure ML names them.
const (
	// ScaleTypeDefault runs instanceCount instances.
	ScaleTypeDefault ScaleType = "default"
	// ScaleTypeTargetUtilization lets leo's autoscaler set the number of
	// instances from the load, between minInstances and maxInstances.
	ScaleTypeTargetUtilization ScaleType = "target_utilization"
)

// OnlineEndpoint condition types, besides Ready.
const (
	// ConditionModelsReady is True when every LlamaModel the deployments use
	// is Ready; its message names the ones still awaited.
	ConditionModelsReady = "ModelsReady"
	// ConditionDeploymentsReady is True when every deployment has a ready
	// pod (or is scaled to zero); its message names the ones that have not.
	ConditionDeploymentsReady = "DeploymentsReady"
)

// ScaleSettings say how many instances a deployment runs.
// +kubebuilder:validation:XValidation:rule="self.type != 'target_utilization' || !has(self.minInstances) || !has(self.maxInstances) || self.minInstances <= self.maxInstances",message="scaleSettings.minInstances must not be greater than scaleSettings.maxInstances (which defaults to 1) for target_utilization"
type ScaleSettings struct {
	// type: default runs instanceCount instances; target_utilization lets
	// the autoscaler choose between minInstances and maxInstances.
	// +kubebuilder:default=default
	// +optional
	Type ScaleType `json:"type,omitempty"`

	// minInstances is the fewest instances the autoscaler keeps. 0 scales
	// the deployment to zero when idle; the gateway wakes it on the next
	// request.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=1
	// +optional
	MinInstances *int32 `json:"minInstances,omitempty"`

	// maxInstances is the most instances the autoscaler starts.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=1
	// +optional
	MaxInstances *int32 `json:"maxInstances,omitempty"`

	// targetUtilizationPercentage is the share of each instance's
	// maxConcurrentRequestsPerInstance the autoscaler aims for.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=70
	// +optional
	TargetUtilizationPercentage int32 `json:"targetUtilizationPercentage,omitempty"`

	// pollingInterval is how often the autoscaler reads the load.
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('5m')",message="scaleSettings.pollingInterval must be between 1s and 5m"
	// +optional
	PollingInterval Duration `json:"pollingInterval,omitempty"`

	// scaleDownDelay is how long the load must stay low before the
	// autoscaler removes an instance (one at a time), so it does not flap.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('24h')",message="scaleSettings.scaleDownDelay must be between 0s and 24h"
	// +optional
	ScaleDownDelay Duration `json:"scaleDownDelay,omitempty"`

	// scaleToZeroIdleTime is how long a deployment with minInstances 0 must
	// receive no request before it is scaled to zero.
	// +kubebuilder:default="15m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s') && duration(self) <= duration('168h')",message="scaleSettings.scaleToZeroIdleTime must be between 30s and 168h"
	// +optional
	ScaleToZeroIdleTime Duration `json:"scaleToZeroIdleTime,omitempty"`
}

// RequestSettings bound each request, as Azure ML's request_settings.
type RequestSettings struct {
	// requestTimeoutMs is how long a request may take, queueing included,
	// before the gateway answers 408.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=180000
	// +kubebuilder:default=5000
	// +optional
	RequestTimeoutMs int32 `json:"requestTimeoutMs,omitempty"`

	// maxConcurrentRequestsPerInstance is how many requests one instance
	// works on at once (its batch). The gateway answers 429 beyond twice this
	// times the number of instances.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	// +kubebuilder:default=1
	// +optional
	MaxConcurrentRequestsPerInstance int32 `json:"maxConcurrentRequestsPerInstance,omitempty"`

	// maxQueueWaitMs is how long a request may wait for a free slot before
	// it is answered 429.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=180000
	// +kubebuilder:default=500
	// +optional
	MaxQueueWaitMs *int32 `json:"maxQueueWaitMs,omitempty"`
}

// ProbeSettings tune a health probe of the runtime pods, as Azure ML's
// liveness_probe and readiness_probe; the defaults are Azure's.
type ProbeSettings struct {
	// initialDelaySeconds before the first probe.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +kubebuilder:default=10
	// +optional
	InitialDelaySeconds *int32 `json:"initialDelaySeconds,omitempty"`

	// periodSeconds between probes.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +kubebuilder:default=10
	// +optional
	PeriodSeconds int32 `json:"periodSeconds,omitempty"`

	// timeoutSeconds a probe may take.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +kubebuilder:default=2
	// +optional
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`

	// successThreshold is how many successes in a row count as healthy
	// after a failure.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=1
	// +optional
	SuccessThreshold int32 `json:"successThreshold,omitempty"`

	// failureThreshold is how many failures in a row count as unhealthy.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=30
	// +optional
	FailureThreshold int32 `json:"failureThreshold,omitempty"`
}

// RuntimeOptions tune leo-runtime in the deployment's pods.
// +kubebuilder:validation:XValidation:rule="!has(self.contextLength) || !has(self.kvCacheTokens) || self.contextLength == 0 || self.kvCacheTokens == 0 || self.kvCacheTokens >= self.contextLength",message="runtime.kvCacheTokens must hold at least one whole context: make it at least runtime.contextLength"
type RuntimeOptions struct {
	// contextLength is the longest sequence (prompt plus answer) served, in
	// tokens. 0 uses the model's own context length.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1048576
	// +optional
	ContextLength int32 `json:"contextLength,omitempty"`

	// maxBatchSize is how many sequences one forward pass works on
	// (continuous batching). 0 uses maxConcurrentRequestsPerInstance.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1024
	// +optional
	MaxBatchSize int32 `json:"maxBatchSize,omitempty"`

	// kvCacheTokens caps the KV cache shared by all sequences, in tokens:
	// the pods run as many sequences at once as whole contexts fit in it
	// (at most maxBatchSize), and a cache smaller than the default context
	// makes the context that size. 0 sizes it to maxBatchSize whole
	// contexts.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=16777216
	// +optional
	KVCacheTokens int32 `json:"kvCacheTokens,omitempty"`
}

// EndpointDeployment is one set of runtime pods serving one model behind
// the endpoint, as an Azure ML online deployment (e.g. "blue" and "green").
// +kubebuilder:validation:XValidation:rule="!has(self.livenessProbe) || !has(self.livenessProbe.successThreshold) || self.livenessProbe.successThreshold == 1",message="livenessProbe.successThreshold must be 1: Kubernetes does not allow another value for liveness probes"
type EndpointDeployment struct {
	// name of the deployment, unique in the endpoint: a DNS label of 3 to 32
	// characters (as Azure ML requires), e.g. blue.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="deployment name must be lowercase letters, digits and '-', start with a letter and end with a letter or digit"
	Name string `json:"name"`

	// model is the name of the LlamaModel (in this namespace) to serve.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Model string `json:"model"`

	// instanceCount is the number of runtime pods when scaleSettings.type is
	// default. With target_utilization the autoscaler sets it.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=1
	// +optional
	InstanceCount *int32 `json:"instanceCount,omitempty"`

	// scaleSettings say who sets the number of instances.
	// +kubebuilder:default={}
	// +optional
	ScaleSettings ScaleSettings `json:"scaleSettings,omitempty"`

	// requestSettings bound each request.
	// +kubebuilder:default={}
	// +optional
	RequestSettings RequestSettings `json:"requestSettings,omitempty"`

	// livenessProbe restarts a pod that stops answering.
	// +kubebuilder:default={}
	// +optional
	LivenessProbe *ProbeSettings `json:"livenessProbe,omitempty"`

	// readinessProbe takes a pod out of rotation while it cannot answer.
	// +kubebuilder:default={}
	// +optional
	ReadinessProbe *ProbeSettings `json:"readinessProbe,omitempty"`

	// resources each pod asks for: GPUs, CPU, memory.
	// +kubebuilder:default={}
	// +optional
	Resources ComputeResources `json:"resources,omitempty"`

	// Placement: nodeSelector, tolerations and runtimeClassName.
	Placement `json:",inline"`

	// environmentVariables are extra environment variables for the runtime.
	// +optional
	EnvironmentVariables EnvironmentVariables `json:"environmentVariables,omitempty"`

	// runtime tunes leo-runtime: context length, batch size, KV cache.
	// +kubebuilder:default={}
	// +optional
	Runtime RuntimeOptions `json:"runtime,omitempty"`
}

// OnlineEndpointSpec is what the user wants served.
// +kubebuilder:validation:XValidation:rule="!has(self.traffic) || self.traffic.all(d, has(self.deployments) && self.deployments.exists(x, x.name == d))",message="traffic names a deployment that is not in spec.deployments"
// +kubebuilder:validation:XValidation:rule="!has(self.traffic) || self.traffic.map(d, self.traffic[d]).sum() in [0, 100]",message="traffic percentages must add up to 100, or to 0 to send no traffic"
// +kubebuilder:validation:XValidation:rule="!has(self.mirrorTraffic) || self.mirrorTraffic.all(d, has(self.deployments) && self.deployments.exists(x, x.name == d))",message="mirrorTraffic names a deployment that is not in spec.deployments"
// +kubebuilder:validation:XValidation:rule="!has(self.mirrorTraffic) || self.mirrorTraffic.all(d, !has(self.traffic) || !(d in self.traffic) || self.traffic[d] == 0)",message="mirrorTraffic cannot copy requests to a deployment that receives live traffic: mirror to a deployment with 0% traffic"
type OnlineEndpointSpec struct {
	// authMode: key requires one of the endpoint's keys (kept in a Secret
	// the operator creates); none lets anyone who reaches it call it.
	// +kubebuilder:default=key
	// +optional
	AuthMode AuthMode `json:"authMode,omitempty"`

	// deployments serve the endpoint's models, e.g. blue and green.
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=name
	// +optional
	Deployments []EndpointDeployment `json:"deployments,omitempty"`

	// traffic splits live requests between deployments by percent, e.g.
	// {blue: 90, green: 10}. The percentages add up to 100, or to 0 to send
	// no traffic. Requests pinned with the azureml-model-deployment header go
	// to that deployment whatever its share.
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(d, self[d] >= 0 && self[d] <= 100)",message="each traffic percentage must be between 0 and 100"
	// +optional
	Traffic map[string]int32 `json:"traffic,omitempty"`

	// mirrorTraffic copies a percentage of live requests to one deployment
	// (that gets no live traffic) and drops its answers, to test it with
	// real load, e.g. {green: 10}.
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.size() <= 1",message="mirrorTraffic can copy requests to one deployment only"
	// +kubebuilder:validation:XValidation:rule="self.all(d, self[d] >= 0 && self[d] <= 50)",message="mirrorTraffic percentage must be between 0 and 50"
	// +optional
	MirrorTraffic map[string]int32 `json:"mirrorTraffic,omitempty"`
}

// DeploymentStatus is what the operator observed of one deployment.
type DeploymentStatus struct {
	// name of the deployment.
	Name string `json:"name"`
	// replicas is the number of runtime pods.
	Replicas int32 `json:"replicas"`
	// readyReplicas is the number of runtime pods ready to serve.
	ReadyReplicas int32 `json:"readyReplicas"`
	// model is the LlamaModel the deployment serves.
	// +optional
	Model string `json:"model,omitempty"`
}

// OnlineEndpointStatus is what the operator observed.
type OnlineEndpointStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// scoringURI is where to POST Azure ML scoring requests.
	// +optional
	ScoringURI string `json:"scoringURI,omitempty"`

	// openAIBaseURL is the base URL for OpenAI clients (…/v1).
	// +optional
	OpenAIBaseURL string `json:"openAIBaseURL,omitempty"`

	// keysSecretName names the Secret with the endpoint's primaryKey and
	// secondaryKey, when authMode is key.
	// +optional
	KeysSecretName string `json:"keysSecretName,omitempty"`

	// traffic is the split in force.
	// +optional
	Traffic map[string]int32 `json:"traffic,omitempty"`

	// mirrorTraffic is the mirroring in force.
	// +optional
	MirrorTraffic map[string]int32 `json:"mirrorTraffic,omitempty"`

	// deployments report each deployment's replicas.
	// +listType=map
	// +listMapKey=name
	// +optional
	Deployments []DeploymentStatus `json:"deployments,omitempty"`

	// scalingHistory is the autoscaler's latest decisions (target_utilization
	// deployments), oldest first: when, from and to how many instances,
	// and why.
	// +kubebuilder:validation:MaxItems=20
	// +listType=atomic
	// +optional
	ScalingHistory []ScalingDecision `json:"scalingHistory,omitempty"`

	// conditions: ModelsReady and Ready, with reasons.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ScalingDecision is one change of a deployment's instances by the
// autoscaler.
type ScalingDecision struct {
	// deployment that was scaled.
	Deployment string `json:"deployment"`
	// time of the decision.
	Time metav1.Time `json:"time"`
	// from is the number of instances before.
	From int32 `json:"from"`
	// to is the number of instances after.
	To int32 `json:"to"`
	// reason says what load (or setting) asked for it.
	// +kubebuilder:validation:MaxLength=256
	Reason string `json:"reason"`
}

// OnlineEndpoint serves LlamaModels over HTTP with Azure ML's scoring schema
// and the OpenAI API, from one or more deployments with a traffic split.
//
// It has no /scale subresource: an endpoint has one replica count per
// deployment, not one. The Deployment made for each deployment has /scale,
// and that is what leo's autoscaler (or an HPA) writes.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=oe,categories=leo
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="an OnlineEndpoint's name must be lowercase letters, digits and '-', starting with a letter: it names Services"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.deployments) || self.spec.deployments.all(d, size(self.metadata.name) + size(d.name) < 63)",message="endpoint name and deployment name together must be shorter than 63 characters: <endpoint>-<deployment> names the deployment's Service"
// +kubebuilder:printcolumn:name="Auth",type=string,JSONPath=`.spec.authMode`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Scoring URI",type=string,JSONPath=`.status.scoringURI`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type OnlineEndpoint struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the user wants served.
	Spec OnlineEndpointSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status OnlineEndpointStatus `json:"status,omitempty"`
}

// OnlineEndpointList is a list of OnlineEndpoints.
//
// +kubebuilder:object:root=true
type OnlineEndpointList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the OnlineEndpoints.
	Items []OnlineEndpoint `json:"items"`
}
