package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// InputType says whether a batch input is one file or a folder of files, as
// Azure ML's Input(type=...).
// +kubebuilder:validation:Enum=uri_file;uri_folder
type InputType string

// Input types.
const (
	InputTypeFile   InputType = "uri_file"
	InputTypeFolder InputType = "uri_folder"
)

// InputFormat is the format of batch input files.
// +kubebuilder:validation:Enum=auto;csv;jsonl
type InputFormat string

// Input formats.
const (
	// InputFormatAuto detects the format of each file: CSV with a header,
	// JSONL with input_string, or OpenAI batch JSONL.
	InputFormatAuto  InputFormat = "auto"
	InputFormatCSV   InputFormat = "csv"
	InputFormatJSONL InputFormat = "jsonl"
)

// OutputAction says what a batch run writes, as Azure ML's output_action.
// +kubebuilder:validation:Enum=append_row;summary_only
type OutputAction string

// Output actions.
const (
	// OutputActionAppendRow writes every prediction to the output file, and a
	// summary.
	OutputActionAppendRow OutputAction = "append_row"
	// OutputActionSummaryOnly writes only the summary.
	OutputActionSummaryOnly OutputAction = "summary_only"
)

// LoggingLevel is the verbosity of the batch workers.
// +kubebuilder:validation:Enum=info;warning;debug
type LoggingLevel string

// Logging levels.
const (
	LoggingLevelInfo    LoggingLevel = "info"
	LoggingLevelWarning LoggingLevel = "warning"
	LoggingLevelDebug   LoggingLevel = "debug"
)

// BatchPhase is a one-word summary of where a batch run is.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed
type BatchPhase string

// Batch phases.
const (
	BatchPhasePending   BatchPhase = "Pending"
	BatchPhaseRunning   BatchPhase = "Running"
	BatchPhaseSucceeded BatchPhase = "Succeeded"
	BatchPhaseFailed    BatchPhase = "Failed"
)

// BatchDeployment condition types, besides Ready.
const (
	// ConditionSuspended is True while spec.suspend holds the run.
	ConditionSuspended = "Suspended"
)

// BatchInput says what to score.
// +kubebuilder:validation:XValidation:rule="self.type != 'uri_folder' || !self.uri.startsWith('https://')",message="input.type uri_folder needs a pvc:// or s3:// uri: an https:// URL names one file (use type uri_file)"
type BatchInput struct {
	// uri of the input: pvc://claim/path (a PersistentVolumeClaim in this
	// namespace), s3://bucket/key-or-prefix, or https://host/path/file.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.*|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|https://[^/\\\\s]+/[^\\\\s]+)$')",message="input.uri must be pvc://claim/path, s3://bucket/prefix or https://host/path/file"
	URI string `json:"uri"`

	// type: uri_file for one file, uri_folder for every file in a folder
	// (or under an S3 prefix).
	// +kubebuilder:default=uri_folder
	// +optional
	Type InputType `json:"type,omitempty"`

	// format of the input files: csv (with a header row), jsonl, or auto to
	// detect it per file (OpenAI batch JSONL included).
	// +kubebuilder:default=auto
	// +optional
	Format InputFormat `json:"format,omitempty"`

	// column holding the prompt in CSV files and JSONL records.
	// +kubebuilder:default=input_string
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Column string `json:"column,omitempty"`
}

// BatchOutput says where results go.
type BatchOutput struct {
	// uri of the output folder: pvc://claim/path or s3://bucket/prefix.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/.*)?|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)$')",message="output.uri must be pvc://claim/path or s3://bucket/prefix"
	URI string `json:"uri"`
}

// RetrySettings bound the retries of one mini-batch.
type RetrySettings struct {
	// maxRetries is how many times a failed or timed-out mini-batch is tried
	// again before its files count as failed.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=3
	// +optional
	MaxRetries *int32 `json:"maxRetries,omitempty"`

	// timeout of one mini-batch.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="retrySettings.timeout must be at least 1s"
	// +optional
	Timeout Duration `json:"timeout,omitempty"`
}

// BatchSettings are Azure ML's batch deployment settings.
type BatchSettings struct {
	// miniBatchSize is the number of files in one mini-batch.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +kubebuilder:default=10
	// +optional
	MiniBatchSize int32 `json:"miniBatchSize,omitempty"`

	// maxConcurrencyPerInstance is how many mini-batches one pod works on
	// at once.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	// +kubebuilder:default=1
	// +optional
	MaxConcurrencyPerInstance int32 `json:"maxConcurrencyPerInstance,omitempty"`

	// outputAction: append_row writes every prediction to outputFileName;
	// summary_only writes the summary alone.
	// +kubebuilder:default=append_row
	// +optional
	OutputAction OutputAction `json:"outputAction,omitempty"`

	// outputFileName is the name of the predictions file in the output
	// folder.
	// +kubebuilder:default=predictions.csv
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*$')",message="outputFileName must be a plain file name (letters, digits, '.', '_', '-'), not a path"
	// +optional
	OutputFileName string `json:"outputFileName,omitempty"`

	// retrySettings bound the retries of one mini-batch.
	// +kubebuilder:default={}
	// +optional
	RetrySettings RetrySettings `json:"retrySettings,omitempty"`

	// errorThreshold is how many input files may fail before the run is
	// aborted; -1 never aborts.
	// +kubebuilder:validation:Minimum=-1
	// +kubebuilder:default=-1
	// +optional
	ErrorThreshold *int32 `json:"errorThreshold,omitempty"`

	// loggingLevel of the workers: info, warning or debug.
	// +kubebuilder:default=info
	// +optional
	LoggingLevel LoggingLevel `json:"loggingLevel,omitempty"`

	// environmentVariables are extra environment variables for the workers.
	// +optional
	EnvironmentVariables EnvironmentVariables `json:"environmentVariables,omitempty"`
}

// BatchDeploymentSpec is the batch run the user wants.
type BatchDeploymentSpec struct {
	// model is the name of the LlamaModel (in this namespace) to score with.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Model string `json:"model"`

	// input says what to score.
	Input BatchInput `json:"input"`

	// output says where results go.
	Output BatchOutput `json:"output"`

	// instanceCount is the number of worker pods; they share the input files
	// deterministically.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=1
	// +optional
	InstanceCount int32 `json:"instanceCount,omitempty"`

	// settings are Azure ML's batch deployment settings.
	// +kubebuilder:default={}
	// +optional
	Settings BatchSettings `json:"settings,omitempty"`

	// parameters control text generation; a row may override them where its
	// format carries parameters.
	// +kubebuilder:default={}
	// +optional
	Parameters GenerationParameters `json:"parameters,omitempty"`

	// resources each worker pod asks for: GPUs, CPU, memory.
	// +kubebuilder:default={}
	// +optional
	Resources ComputeResources `json:"resources,omitempty"`

	// Placement: nodeSelector, tolerations and runtimeClassName.
	Placement `json:",inline"`

	// suspend holds the run: no new worker pods start while it is true.
	// It is the one field that may change once the run has started.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// BatchProgress counts the work of a run.
type BatchProgress struct {
	// filesTotal is the number of input files.
	FilesTotal int32 `json:"filesTotal"`
	// filesSucceeded is the number of files scored completely.
	FilesSucceeded int32 `json:"filesSucceeded"`
	// filesFailed is the number of files that failed after their retries.
	FilesFailed int32 `json:"filesFailed"`
	// rowsTotal is the number of input rows seen so far.
	RowsTotal int64 `json:"rowsTotal"`
	// rowsSucceeded is the number of rows with a prediction.
	RowsSucceeded int64 `json:"rowsSucceeded"`
	// rowsFailed is the number of rows that failed.
	RowsFailed int64 `json:"rowsFailed"`
	// miniBatchesTotal is the number of mini-batches.
	MiniBatchesTotal int32 `json:"miniBatchesTotal"`
	// miniBatchesDone is the number of mini-batches finished, failed ones
	// included.
	MiniBatchesDone int32 `json:"miniBatchesDone"`
}

// BatchDeploymentStatus is what the operator observed.
type BatchDeploymentStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase: Pending, Running, Succeeded or Failed.
	// +optional
	Phase BatchPhase `json:"phase,omitempty"`

	// progress counts files, rows and mini-batches.
	// +optional
	Progress *BatchProgress `json:"progress,omitempty"`

	// startTime is when the run started. From then on the spec is frozen,
	// except suspend.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the run ended, in success or failure.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// outputURI is where the predictions and the summary are.
	// +optional
	OutputURI string `json:"outputURI,omitempty"`

	// jobName is the Job running the workers.
	// +optional
	JobName string `json:"jobName,omitempty"`

	// conditions: Suspended and Ready, with reasons.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BatchDeployment scores a file or a folder of files with a LlamaModel, as
// an Azure ML batch deployment job, exactly once per row.
//
// The spec cannot change once the run has started (status.startTime is set),
// except spec.suspend: a different run is a new BatchDeployment. Writing the
// object back unchanged is not a change: quantities compare by value ("0.5"
// and "500m"), and a missing list or map equals an empty one.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=bd,categories=leo
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.startTime) || (self.spec.model == oldSelf.spec.model && self.spec.input == oldSelf.spec.input && self.spec.output == oldSelf.spec.output && self.spec.instanceCount == oldSelf.spec.instanceCount && self.spec.settings.miniBatchSize == oldSelf.spec.settings.miniBatchSize && self.spec.settings.maxConcurrencyPerInstance == oldSelf.spec.settings.maxConcurrencyPerInstance && self.spec.settings.outputAction == oldSelf.spec.settings.outputAction && self.spec.settings.outputFileName == oldSelf.spec.settings.outputFileName && self.spec.settings.retrySettings == oldSelf.spec.settings.retrySettings && has(self.spec.settings.errorThreshold) == has(oldSelf.spec.settings.errorThreshold) && (!has(self.spec.settings.errorThreshold) || self.spec.settings.errorThreshold == oldSelf.spec.settings.errorThreshold) && self.spec.settings.loggingLevel == oldSelf.spec.settings.loggingLevel && (has(self.spec.settings.environmentVariables) ? self.spec.settings.environmentVariables : {}) == (has(oldSelf.spec.settings.environmentVariables) ? oldSelf.spec.settings.environmentVariables : {}) && self.spec.parameters.maxNewTokens == oldSelf.spec.parameters.maxNewTokens && self.spec.parameters.doSample == oldSelf.spec.parameters.doSample && self.spec.parameters.returnFullText == oldSelf.spec.parameters.returnFullText && self.spec.parameters.ignoreEOS == oldSelf.spec.parameters.ignoreEOS && has(self.spec.parameters.temperature) == has(oldSelf.spec.parameters.temperature) && (!has(self.spec.parameters.temperature) || self.spec.parameters.temperature == oldSelf.spec.parameters.temperature) && has(self.spec.parameters.topK) == has(oldSelf.spec.parameters.topK) && (!has(self.spec.parameters.topK) || self.spec.parameters.topK == oldSelf.spec.parameters.topK) && has(self.spec.parameters.topP) == has(oldSelf.spec.parameters.topP) && (!has(self.spec.parameters.topP) || self.spec.parameters.topP == oldSelf.spec.parameters.topP) && has(self.spec.parameters.repetitionPenalty) == has(oldSelf.spec.parameters.repetitionPenalty) && (!has(self.spec.parameters.repetitionPenalty) || self.spec.parameters.repetitionPenalty == oldSelf.spec.parameters.repetitionPenalty) && (has(self.spec.parameters.stop) ? self.spec.parameters.stop : []) == (has(oldSelf.spec.parameters.stop) ? oldSelf.spec.parameters.stop : []) && has(self.spec.parameters.seed) == has(oldSelf.spec.parameters.seed) && (!has(self.spec.parameters.seed) || self.spec.parameters.seed == oldSelf.spec.parameters.seed) && self.spec.resources.gpus == oldSelf.spec.resources.gpus && self.spec.resources.gpuResourceName == oldSelf.spec.resources.gpuResourceName && (has(self.spec.resources.cpu) ? quantity(string(self.spec.resources.cpu)) : quantity('0')).compareTo(has(oldSelf.spec.resources.cpu) ? quantity(string(oldSelf.spec.resources.cpu)) : quantity('0')) == 0 && (has(self.spec.resources.memory) ? quantity(string(self.spec.resources.memory)) : quantity('0')).compareTo(has(oldSelf.spec.resources.memory) ? quantity(string(oldSelf.spec.resources.memory)) : quantity('0')) == 0 && (has(self.spec.nodeSelector) ? self.spec.nodeSelector : {}) == (has(oldSelf.spec.nodeSelector) ? oldSelf.spec.nodeSelector : {}) && (has(self.spec.tolerations) ? self.spec.tolerations : []) == (has(oldSelf.spec.tolerations) ? oldSelf.spec.tolerations : []) && has(self.spec.runtimeClassName) == has(oldSelf.spec.runtimeClassName) && (!has(self.spec.runtimeClassName) || self.spec.runtimeClassName == oldSelf.spec.runtimeClassName))",message="the run has started: only spec.suspend may change; create a new BatchDeployment for a different run"
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.model`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Files",type=integer,JSONPath=`.status.progress.filesTotal`
// +kubebuilder:printcolumn:name="Succeeded",type=integer,JSONPath=`.status.progress.filesSucceeded`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.progress.filesFailed`
// +kubebuilder:printcolumn:name="Suspended",type=boolean,JSONPath=`.spec.suspend`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BatchDeployment struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the batch run the user wants.
	Spec BatchDeploymentSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status BatchDeploymentStatus `json:"status,omitempty"`
}

// BatchDeploymentList is a list of BatchDeployments.
//
// +kubebuilder:object:root=true
type BatchDeploymentList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the BatchDeployments.
	Items []BatchDeployment `json:"items"`
}
