package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ModelFormat is the file format of a model's weights.
// +kubebuilder:validation:Enum=auto;gguf;safetensors;llama2c
type ModelFormat string

// Model formats.
const (
	ModelFormatAuto        ModelFormat = "auto"
	ModelFormatGGUF        ModelFormat = "gguf"
	ModelFormatSafetensors ModelFormat = "safetensors"
	ModelFormatLlama2c     ModelFormat = "llama2c"
)

// Quantization is the weight type a model is converted to once, after the
// download.
// +kubebuilder:validation:Enum=none;f16;q8_0;q4_0;q4_k
type Quantization string

// Quantizations.
const (
	QuantizationNone Quantization = "none"
	QuantizationF16  Quantization = "f16"
	QuantizationQ8_0 Quantization = "q8_0"
	QuantizationQ4_0 Quantization = "q4_0"
	QuantizationQ4K  Quantization = "q4_k"
)

// ModelPhase is a one-word summary of where a LlamaModel is.
// +kubebuilder:validation:Enum=Pending;Downloading;Converting;Quantizing;Ready;Failed
type ModelPhase string

// Model phases, in the order a model goes through them.
const (
	ModelPhasePending     ModelPhase = "Pending"
	ModelPhaseDownloading ModelPhase = "Downloading"
	ModelPhaseConverting  ModelPhase = "Converting"
	ModelPhaseQuantizing  ModelPhase = "Quantizing"
	ModelPhaseReady       ModelPhase = "Ready"
	ModelPhaseFailed      ModelPhase = "Failed"
)

// LlamaModel condition types, besides Ready.
const (
	ConditionDownloaded = "Downloaded"
	ConditionConverted  = "Converted"
	ConditionQuantized  = "Quantized"
)

// ModelSource says where the weights come from.
// +kubebuilder:validation:XValidation:rule="!self.uri.startsWith('http://') || (has(self.allowInsecureHTTP) && self.allowInsecureHTTP)",message="source.uri uses plain http://: use https://, or set source.allowInsecureHTTP: true if you trust the network"
// +kubebuilder:validation:XValidation:rule="!has(self.files) || self.uri.startsWith('hf://') || self.uri.startsWith('s3://') || self.uri.startsWith('pvc://')",message="source.files selects files in a repository, bucket prefix or volume folder; an http(s):// URI names a single file"
type ModelSource struct {
	// uri names the weights. One of:
	//   hf://org/repo[@revision]   a Hugging Face Hub repository (revision: branch, tag or commit; default main)
	//   https://host/path/file     one file over HTTPS
	//   s3://bucket/key            an object or a prefix in S3 or an S3-compatible store
	//   pvc://claim/path           a file or folder on a PersistentVolumeClaim in this namespace
	// It is immutable: create another LlamaModel for other weights.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('hf://') || self.startsWith('https://') || self.startsWith('http://') || self.startsWith('s3://') || self.startsWith('pvc://')",message="source.uri must start with hf://, https://, s3:// or pvc://"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('hf://') || self.matches('^hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$')",message="source.uri hf:// must look like hf://org/repo or hf://org/repo@revision"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('s3://') || self.matches('^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$')",message="source.uri s3:// must look like s3://bucket/key, with a valid bucket name"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+$')",message="source.uri pvc:// must look like pvc://claim/path, with the name of a PersistentVolumeClaim in this namespace"
	// +kubebuilder:validation:XValidation:rule="!(self.startsWith('https://') || self.startsWith('http://')) || self.matches('^https?://[^/\\\\s]+/[^\\\\s]*[^/\\\\s]$')",message="source.uri https:// must name a file: https://host/path/file"
	URI string `json:"uri"`

	// allowInsecureHTTP permits an http:// uri. Weights fetched without TLS can
	// be tampered with on the way; set sha256 as well.
	// +optional
	AllowInsecureHTTP bool `json:"allowInsecureHTTP,omitempty"`

	// files selects which files of a repository, bucket prefix or folder to
	// fetch, as globs ("*.gguf", "model-*.safetensors"). Empty means all the
	// files the format needs.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	// +listType=atomic
	// +optional
	Files []string `json:"files,omitempty"`

	// credentialsSecretRef names a Secret in this namespace with the
	// credentials for the source: HF_TOKEN for hf://; AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY (optionally AWS_SESSION_TOKEN, AWS_REGION) for
	// s3://; an Authorization header value under AUTHORIZATION for https://.
	// +optional
	CredentialsSecretRef *corev1.LocalObjectReference `json:"credentialsSecretRef,omitempty"`

	// endpoint overrides the service the uri is fetched from: a Hugging Face
	// mirror for hf:// (as HF_ENDPOINT), or an S3-compatible store for s3://.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://[^\\\\s]+$')",message="source.endpoint must be an http:// or https:// URL"
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// sha256 is the expected SHA-256 of the downloaded file, in hex. The
	// download fails when it differs. For hf:// sources the hub's own LFS
	// checksums are always checked; this adds a pin you chose.
	// +kubebuilder:validation:Pattern=`^[a-f0-9]{64}$`
	// +optional
	SHA256 string `json:"sha256,omitempty"`
}

// ModelStorage says where the cached weights live: a new PersistentVolumeClaim
// the operator creates, or one that exists.
// +kubebuilder:validation:XValidation:rule="!has(self.existingClaim) || !(has(self.size) || has(self.storageClassName) || has(self.accessModes))",message="storage.existingClaim uses a claim that already exists: leave size, storageClassName and accessModes unset"
type ModelStorage struct {
	// size of the claim the operator creates. Leave room for the download and
	// the quantized copy. When empty the operator requests 50Gi.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// storageClassName of the claim the operator creates. Empty uses the
	// cluster's default StorageClass.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// accessModes of the claim the operator creates. ReadWriteMany (or
	// ReadOnlyMany after the download) lets pods on several nodes share one
	// copy. When empty: ReadWriteOnce.
	// +kubebuilder:validation:MaxItems=4
	// +listType=atomic
	// +optional
	AccessModes []corev1.PersistentVolumeAccessMode `json:"accessModes,omitempty"`

	// existingClaim names a PersistentVolumeClaim in this namespace to cache
	// the weights on instead of creating one. The operator never deletes it.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ExistingClaim string `json:"existingClaim,omitempty"`
}

// DownloadSettings bound how long and how often a download is tried.
type DownloadSettings struct {
	// timeout bounds one whole attempt: download, conversion and quantization.
	// +kubebuilder:default="2h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="download.timeout must be at least 1m"
	// +optional
	Timeout Duration `json:"timeout,omitempty"`

	// stallTimeout restarts a transfer (from where it stopped) when no byte
	// has arrived for this long.
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5s')",message="download.stallTimeout must be at least 5s"
	// +optional
	StallTimeout Duration `json:"stallTimeout,omitempty"`

	// retries is how many times a failed attempt is tried again, with
	// backoff, before the model is Failed.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=20
	// +kubebuilder:default=3
	// +optional
	Retries *int32 `json:"retries,omitempty"`
}

// LlamaModelSpec is what the user wants cached.
type LlamaModelSpec struct {
	// source says where the weights come from. Its uri, files and sha256
	// cannot change once set; credentials, endpoint (a mirror) and
	// allowInsecureHTTP may, as they do not change which weights these are.
	// +kubebuilder:validation:XValidation:rule="self.uri == oldSelf.uri && (has(self.files) ? self.files : []) == (has(oldSelf.files) ? oldSelf.files : []) && (has(self.sha256) ? self.sha256 : '') == (has(oldSelf.sha256) ? oldSelf.sha256 : '')",message="source.uri, source.files and source.sha256 are immutable: create a new LlamaModel for other weights"
	Source ModelSource `json:"source"`

	// format of the weights at the source; auto detects it from the files.
	// Everything is converted to GGUF for the runtime.
	// +kubebuilder:default=auto
	// +optional
	Format ModelFormat `json:"format,omitempty"`

	// quantization converts the weights once after the download: f16, q8_0,
	// q4_0 or q4_k (as llama.cpp's types); none keeps them as they are.
	// +kubebuilder:default=none
	// +optional
	Quantization Quantization `json:"quantization,omitempty"`

	// storage says where the cached weights live.
	// +kubebuilder:default={}
	// +optional
	Storage ModelStorage `json:"storage,omitempty"`

	// download bounds the time and retries of the download job.
	// +kubebuilder:default={}
	// +optional
	Download DownloadSettings `json:"download,omitempty"`
}

// TransferProgress counts bytes of the download.
type TransferProgress struct {
	// bytesDone is how many bytes are on disk.
	BytesDone int64 `json:"bytesDone"`
	// bytesTotal is how many bytes the download has in all; 0 while unknown.
	BytesTotal int64 `json:"bytesTotal"`
	// percent is bytesDone of bytesTotal, rounded down; for display.
	// +optional
	Percent int32 `json:"percent,omitempty"`
}

// ModelArtifact is the file the runtime loads.
type ModelArtifact struct {
	// path of the file on the cache volume.
	Path string `json:"path"`
	// claimName is the PersistentVolumeClaim that holds it.
	ClaimName string `json:"claimName"`
	// sizeBytes is the size of the file.
	SizeBytes int64 `json:"sizeBytes"`
	// sha256 of the file, in hex.
	SHA256 string `json:"sha256"`
	// format of the file (always gguf once converted).
	Format ModelFormat `json:"format"`
	// quantization of the weights in the file.
	Quantization Quantization `json:"quantization"`
}

// ModelFacts describe the model, as read from the artifact.
type ModelFacts struct {
	// architecture as GGUF names it, e.g. llama.
	Architecture string `json:"architecture"`
	// parameterCount is the number of weights.
	ParameterCount int64 `json:"parameterCount"`
	// contextLength is the longest sequence the model was trained for.
	ContextLength int32 `json:"contextLength"`
	// vocabSize is the number of tokens in the vocabulary.
	VocabSize int32 `json:"vocabSize"`
	// embeddingLength is the width of the hidden state.
	// +optional
	EmbeddingLength int32 `json:"embeddingLength,omitempty"`
	// layers is the number of transformer blocks.
	// +optional
	Layers int32 `json:"layers,omitempty"`
	// chatTemplate is true when the file carries its own chat template.
	// +optional
	ChatTemplate bool `json:"chatTemplate,omitempty"`
}

// LlamaModelStatus is what the operator observed.
type LlamaModelStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase summarises where the model is: Pending, Downloading, Converting,
	// Quantizing, Ready or Failed. Conditions say why.
	// +optional
	Phase ModelPhase `json:"phase,omitempty"`

	// conditions: Downloaded, Converted, Quantized and Ready, with reasons.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// progress of the download.
	// +optional
	Progress *TransferProgress `json:"progress,omitempty"`

	// attempts is how many download jobs have run, failed ones included.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// artifact is the file the runtime loads, once Ready.
	// +optional
	Artifact *ModelArtifact `json:"artifact,omitempty"`

	// model describes the model, once Ready.
	// +optional
	Model *ModelFacts `json:"model,omitempty"`
}

// LlamaModel is a model's weights, downloaded (and quantized) once into a
// volume that endpoints and batch runs mount.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=lm,categories=leo
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.source.uri`
// +kubebuilder:printcolumn:name="Quantization",type=string,JSONPath=`.spec.quantization`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Progress",type=integer,JSONPath=`.status.progress.percent`,description="percent downloaded"
// +kubebuilder:printcolumn:name="Size",type=integer,JSONPath=`.status.artifact.sizeBytes`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LlamaModel struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the user wants cached.
	Spec LlamaModelSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status LlamaModelStatus `json:"status,omitempty"`
}

// LlamaModelList is a list of LlamaModels.
//
// +kubebuilder:object:root=true
type LlamaModelList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the LlamaModels.
	Items []LlamaModel `json:"items"`
}
