package desired

import (
	"path"
	"strconv"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

// BatchExitPermanent is the exit status with which `leo-runtime batch` says
// the run must stop (the error threshold is passed, or the input cannot be
// read): the Job fails at once instead of retrying the pod.
const BatchExitPermanent = 3

// BatchJobName is the name of a BatchDeployment's Indexed Job. It leaves
// room in 63 characters for the index in the pods' host names.
func BatchJobName(b *servingv1alpha1.BatchDeployment) string {
	// A BatchDeployment's name may hold dots; a pod's host name (the Job's
	// name and the index) may not.
	return dnsLabel(boundedName(52, strings.ReplaceAll(b.Name, ".", "-")))
}

// BatchJob is the Indexed Job of a batch run: instanceCount pods, each
// running `leo-runtime batch` on its shard (its completion index) of the
// input files, with the Azure ML settings and the generation parameters as
// flags.
func BatchJob(b *servingv1alpha1.BatchDeployment, m *servingv1alpha1.LlamaModel, cfg Config) (*batchv1.Job, error) {
	modelVol, modelMount, modelPath, err := ModelVolume(m)
	if err != nil {
		return nil, err
	}
	tmpVol, tmpMount := scratchVolume()
	volumes := []corev1.Volume{modelVol, tmpVol}
	mounts := []corev1.VolumeMount{modelMount, tmpMount}

	// Volumes for pvc:// input and output: one mount per claim, read-only
	// unless the output is on it.
	outClaim, _, outOnClaim := cutClaim(b.Spec.Output.URI)
	claims := map[string]string{} // claim -> mount path
	mountClaim := func(claim string) string {
		if p, ok := claims[claim]; ok {
			return p
		}
		p := "/data/" + strconv.Itoa(len(claims))
		name := "data-" + strconv.Itoa(len(claims))
		v, vm := claimVolume(name, claim, p, !outOnClaim || claim != outClaim)
		volumes, mounts = append(volumes, v), append(mounts, vm)
		claims[claim] = p
		return p
	}
	local := func(uri string) string {
		claim, p, ok := cutClaim(uri)
		if !ok {
			return uri // s3:// or https://: the worker reads it itself
		}
		return path.Join(mountClaim(claim), p)
	}
	input, output := local(b.Spec.Input.URI), local(b.Spec.Output.URI)

	s := b.Spec.Settings
	args := []string{"batch",
		"--model", modelPath,
		"--input", input,
		"--input-type", string(orDefault(b.Spec.Input.Type, servingv1alpha1.InputTypeFolder)),
		"--format", string(orDefault(b.Spec.Input.Format, servingv1alpha1.InputFormatAuto)),
		"--column", orDefault(b.Spec.Input.Column, "input_string"),
		"--output", output,
		"--instance-count", strconv.Itoa(int(max(b.Spec.InstanceCount, 1))),
		"--mini-batch-size", strconv.Itoa(int(max(s.MiniBatchSize, 1))),
		"--max-concurrency-per-instance", strconv.Itoa(int(max(s.MaxConcurrencyPerInstance, 1))),
		"--output-action", string(orDefault(s.OutputAction, servingv1alpha1.OutputActionAppendRow)),
		"--output-file-name", orDefault(s.OutputFileName, "predictions.csv"),
		"--error-threshold", strconv.Itoa(int(valueOr(s.ErrorThreshold, -1))),
		"--logging-level", string(orDefault(s.LoggingLevel, servingv1alpha1.LoggingLevelInfo)),
		"--max-retries", strconv.Itoa(int(valueOr(s.RetrySettings.MaxRetries, 3))),
		"--timeout", string(orDefault(s.RetrySettings.Timeout, "30s")),
	}
	args = append(args, generationFlags(b.Spec.Parameters)...)

	// The worker's shard is its completion index, from the downward API
	// (read as LEO_INSTANCE_INDEX, the env form of --instance-index).
	env := append([]corev1.EnvVar{{Name: "LEO_INSTANCE_INDEX", ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']"},
	}}}, envVars(s.EnvironmentVariables)...)

	n := max(b.Spec.InstanceCount, 1)
	labels := map[string]string{
		LabelName: "leo-runtime", LabelComponent: "batch", LabelManagedBy: ManagedBy,
		LabelBatch: boundedName(maxLabelValue, b.Name),
	}
	mode := batchv1.IndexedCompletion
	spec := jobPodSpec(volumes, corev1.Container{
		Name: "batch", Image: cfg.RuntimeImage, ImagePullPolicy: cfg.ImagePullPolicy,
		Args: args, Env: env,
		Resources:                resources(b.Spec.Resources),
		VolumeMounts:             mounts,
		SecurityContext:          containerSecurityContext(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	})
	spec.NodeSelector, spec.Tolerations, spec.RuntimeClassName = b.Spec.NodeSelector, b.Spec.Tolerations, b.Spec.RuntimeClassName
	return &batchv1.Job{
		TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{Name: BatchJobName(b), Namespace: b.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			CompletionMode: &mode,
			Completions:    &n,
			Parallelism:    &n,
			Suspend:        ptr(b.Spec.Suspend),
			// A worker resumes its shard from its journal, so a pod lost to a
			// node failure is retried; three times per worker in all.
			BackoffLimit:     ptr(3 * n),
			PodFailurePolicy: failFast("batch", BatchExitPermanent),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       spec,
			},
		},
	}, nil
}

// generationFlags are the flags of `leo-runtime generate` and `batch` for
// the spec's generation parameters; unset ones are left to the runtime.
func generationFlags(p servingv1alpha1.GenerationParameters) []string {
	var out []string
	if p.MaxNewTokens > 0 {
		out = append(out, "--max-new-tokens", strconv.Itoa(int(p.MaxNewTokens)))
	}
	if p.DoSample {
		out = append(out, "--do-sample")
	}
	if p.Temperature != nil {
		out = append(out, "--temperature", strconv.FormatFloat(*p.Temperature, 'g', -1, 64))
	}
	if p.TopK != nil {
		out = append(out, "--top-k", strconv.Itoa(int(*p.TopK)))
	}
	if p.TopP != nil {
		out = append(out, "--top-p", strconv.FormatFloat(*p.TopP, 'g', -1, 64))
	}
	if p.RepetitionPenalty != nil {
		out = append(out, "--repetition-penalty", strconv.FormatFloat(*p.RepetitionPenalty, 'g', -1, 64))
	}
	for _, s := range p.Stop {
		out = append(out, "--stop", s)
	}
	if p.Seed != nil {
		out = append(out, "--seed", strconv.FormatInt(*p.Seed, 10))
	}
	if p.ReturnFullText {
		out = append(out, "--return-full-text")
	}
	if p.IgnoreEOS {
		out = append(out, "--ignore-eos")
	}
	return out
}

// OutputURI is where a run's predictions and summary are, as the user
// named it.
func OutputURI(b *servingv1alpha1.BatchDeployment) string {
	return b.Spec.Output.URI
}

// cutClaim splits pvc://claim/path.
func cutClaim(uri string) (claim, p string, ok bool) {
	rest, ok := strings.CutPrefix(uri, "pvc://")
	if !ok {
		return "", "", false
	}
	claim, p, _ = strings.Cut(rest, "/")
	return claim, p, true
}

func orDefault[T ~string](v, def T) T {
	if v == "" {
		return def
	}
	return v
}

func valueOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
