package v1alpha1

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Condition types shared by the three kinds.
const (
	// ConditionReady is True when the object does what its spec asks: the
	// model is cached, the endpoint serves, the batch run finished.
	ConditionReady = "Ready"
)

// ComputeResources are what each runtime pod asks of a node.
type ComputeResources struct {
	// gpus is the number of GPUs each pod requests (and is limited to). 0
	// runs the model on the CPU.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=16
	// +kubebuilder:default=0
	// +optional
	GPUs int32 `json:"gpus,omitempty"`

	// gpuResourceName is the extended resource that GPUs are requested as,
	// as the cluster's device plugin names it.
	// +kubebuilder:default="nvidia.com/gpu"
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",message="gpuResourceName must be an extended resource name with a domain, such as nvidia.com/gpu or amd.com/gpu"
	// +optional
	GPUResourceName string `json:"gpuResourceName,omitempty"`

	// cpu is the CPU each pod requests, e.g. "4" or "500m". Empty leaves it to
	// the namespace's defaults.
	// +optional
	CPU *resource.Quantity `json:"cpu,omitempty"`

	// memory is the memory each pod requests and is limited to, e.g. "16Gi".
	// It must hold the model's weights when they are on the CPU, plus the KV
	// cache. Empty leaves it to the namespace's defaults.
	// +optional
	Memory *resource.Quantity `json:"memory,omitempty"`
}

// Duration is a length of time as Go writes it: a sequence of numbers with
// units h, m, s or ms, e.g. "30s", "5m", "1h30m".
//
// It is a string, not a metav1.Duration, so that a client that reads and
// writes an object back keeps it as the user wrote it ("300s" stays "300s"
// rather than becoming "5m0s"): the rules that freeze fields compare text.
// +kubebuilder:validation:Pattern=`^([0-9]{1,6}(\.[0-9]+)?(h|m|s|ms))+$`
// +kubebuilder:validation:MaxLength=32
type Duration string

// Or is the duration, or def when it is empty (or not a duration, which
// the API server's validation keeps out of stored objects).
func (d Duration) Or(def time.Duration) time.Duration {
	v, err := time.ParseDuration(string(d))
	if d == "" || err != nil {
		return def
	}
	return v
}

// Placement says which nodes may run the pods.
type Placement struct {
	// nodeSelector restricts the pods to nodes with these labels, e.g. a GPU
	// model: {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}.
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations let the pods run on tainted nodes, such as GPU nodes tainted
	// nvidia.com/gpu=present:NoSchedule.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// runtimeClassName selects the container runtime handler (e.g. "nvidia"
	// where the NVIDIA container runtime is not the default).
	// +kubebuilder:validation:MaxLength=253
	// +optional
	RuntimeClassName *string `json:"runtimeClassName,omitempty"`
}

// EnvironmentVariables are extra environment variables for the runtime
// containers, by name, as Azure ML's environment_variables.
// +kubebuilder:validation:MaxProperties=64
// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_.-]*$'))",message="environment variable names must start with a letter or _ and contain only letters, digits, _, . and -"
type EnvironmentVariables map[string]string

// GenerationParameters control text generation. They follow Hugging Face
// generate() and the parameters of Azure ML's Llama 2 scoring schema; a
// request (or a batch row) may override them.
type GenerationParameters struct {
	// maxNewTokens is the most tokens generated per answer.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=131072
	// +kubebuilder:default=256
	// +optional
	MaxNewTokens int32 `json:"maxNewTokens,omitempty"`

	// doSample samples from the distribution when true; when false the most
	// likely token is taken (greedy), and temperature, topK and topP are
	// ignored.
	// +kubebuilder:default=false
	// +optional
	DoSample bool `json:"doSample,omitempty"`

	// temperature divides the logits before sampling; lower is more
	// deterministic. 0 means greedy.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Temperature *float64 `json:"temperature,omitempty"`

	// topK keeps only the k most likely tokens. Unset (or 0) turns it off.
	// +kubebuilder:validation:Minimum=0
	// +optional
	TopK *int32 `json:"topK,omitempty"`

	// topP keeps the smallest set of most likely tokens whose probabilities
	// add up to at least topP. Unset (or 1) turns it off.
	// +kubebuilder:validation:XValidation:rule="self > 0.0 && self <= 1.0",message="topP must be greater than 0 and at most 1"
	// +optional
	TopP *float64 `json:"topP,omitempty"`

	// repetitionPenalty divides the logits of tokens already present (1 is
	// off), as in Hugging Face generate().
	// +kubebuilder:validation:XValidation:rule="self > 0.0 && self <= 10.0",message="repetitionPenalty must be greater than 0 and at most 10 (1 turns it off)"
	// +optional
	RepetitionPenalty *float64 `json:"repetitionPenalty,omitempty"`

	// stop ends generation at the first of these strings; the string is not
	// part of the answer.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=atomic
	// +optional
	Stop []string `json:"stop,omitempty"`

	// seed makes sampling repeatable.
	// +optional
	Seed *int64 `json:"seed,omitempty"`

	// returnFullText prepends the prompt to the answer. Off by default, as
	// the Llama 2 model card documents: only the generated part is returned.
	// +kubebuilder:default=false
	// +optional
	ReturnFullText bool `json:"returnFullText,omitempty"`

	// ignoreEOS keeps generating past the end-of-sequence token until
	// maxNewTokens.
	// +kubebuilder:default=false
	// +optional
	IgnoreEOS bool `json:"ignoreEOS,omitempty"`
}
