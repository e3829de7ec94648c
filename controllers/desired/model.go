package desired

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

// DefaultCacheSize is the size of a cache claim whose spec gives none.
var DefaultCacheSize = resource.MustParse("50Gi")

// PrepareExitPermanent is the exit status with which `leo-runtime prepare`
// says that retrying cannot help (401 from the hub, checksum mismatch, no
// space): the Job's pod failure policy fails the Job at once.
const PrepareExitPermanent = 3

// CacheClaimName is the claim that holds a model's files: the existing
// claim the spec names, or the one the operator creates for the model.
func CacheClaimName(m *servingv1alpha1.LlamaModel) string {
	if c := m.Spec.Storage.ExistingClaim; c != "" {
		return c
	}
	return boundedName(253, m.Name, "cache")
}

// CacheClaim is the claim the operator creates for a model, or nil when the
// model uses an existing one.
func CacheClaim(m *servingv1alpha1.LlamaModel) *corev1.PersistentVolumeClaim {
	s := m.Spec.Storage
	if s.ExistingClaim != "" {
		return nil
	}
	size := DefaultCacheSize
	if s.Size != nil {
		size = *s.Size
	}
	modes := s.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	return &corev1.PersistentVolumeClaim{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: metav1.ObjectMeta{
			Name: CacheClaimName(m), Namespace: m.Namespace,
			Labels: modelLabels(m.Name, "cache"),
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      modes,
			StorageClassName: s.StorageClassName,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
}

// ArtifactDir is the directory on the cache claim that holds one
// (source, quantization): the download under source/ and the artifact,
// model.gguf. It is derived from the source, its revision (part of an hf://
// uri), the files selected, the pinned checksum, the format and the
// quantization, readable first and exact through the hash, so two models
// asking for the same weights in the same quantization share it.
func ArtifactDir(spec servingv1alpha1.LlamaModelSpec) string {
	src := spec.Source
	key := shortHash(12, src.URI, strings.Join(src.Files, ","), src.SHA256, string(spec.Format))
	return path.Join("leo-models", slug(stripScheme(src.URI), 80)+"-"+key, string(quantizationOf(spec)))
}

// ArtifactPath is the path of the artifact on the cache claim.
func ArtifactPath(spec servingv1alpha1.LlamaModelSpec) string {
	return path.Join(ArtifactDir(spec), "model.gguf")
}

// PrepareJobName is the name of the Job that prepares an artifact on a
// claim. Every model with the same claim and artifact directory computes
// the same name, which is how they share one download.
func PrepareJobName(claim, artifactDir string) string {
	return "leo-prepare-" + shortHash(16, claim, artifactDir)
}

// ArtifactHash is the value of LabelArtifact on a prepare Job.
func ArtifactHash(claim, artifactDir string) string {
	return shortHash(16, claim, artifactDir)
}

// PrepareJob is the Job that runs `leo-runtime prepare` for a model: pull,
// convert, quantize and inspect in one pod, writing into the cache claim.
// Its pod reports progress as JSON lines in its log and the result (or the
// reason of a failure) as its termination message.
//
// Retries are the Job controller's: backoffLimit is the spec's retries, with
// Kubernetes' exponential backoff between pods, and a failure that retrying
// cannot help (exit status 3) fails the Job at once.
func PrepareJob(m *servingv1alpha1.LlamaModel, cfg Config) *batchv1.Job {
	claim := CacheClaimName(m)
	dir := ArtifactDir(m.Spec)
	src := m.Spec.Source

	cacheVol, cacheMount := claimVolume("cache", claim, ModelsMount, false)
	tmpVol, tmpMount := scratchVolume()
	volumes := []corev1.Volume{cacheVol, tmpVol}
	mounts := []corev1.VolumeMount{cacheMount, tmpMount}

	source := src.URI
	if rest, ok := strings.CutPrefix(src.URI, "pvc://"); ok {
		srcClaim, p, _ := strings.Cut(rest, "/")
		if srcClaim == claim {
			source = path.Join(ModelsMount, p)
		} else {
			v, vm := claimVolume("source", srcClaim, "/source", true)
			volumes = append(volumes, v)
			mounts = append(mounts, vm)
			source = path.Join("/source", p)
		}
	}

	args := []string{"prepare",
		"--source", source,
		"--dir", path.Join(ModelsMount, dir),
		"--artifact", path.Join(ModelsMount, ArtifactPath(m.Spec)),
		"--format", string(formatOf(m.Spec)),
		"--quantization", string(quantizationOf(m.Spec)),
	}
	for _, f := range src.Files {
		args = append(args, "--include", f)
	}
	if src.SHA256 != "" {
		args = append(args, "--sha256", src.SHA256)
	}
	if src.AllowInsecureHTTP {
		args = append(args, "--allow-http")
	}
	dl := m.Spec.Download
	if dl.StallTimeout != "" {
		args = append(args, "--stall-timeout", string(dl.StallTimeout))
	}
	if dl.Timeout != "" {
		args = append(args, "--timeout", string(dl.Timeout))
	}

	var env []corev1.EnvVar
	if src.Endpoint != "" {
		name := "HF_ENDPOINT"
		if strings.HasPrefix(src.URI, "s3://") {
			name = "AWS_ENDPOINT_URL"
		}
		env = append(env, corev1.EnvVar{Name: name, Value: src.Endpoint})
	}
	var envFrom []corev1.EnvFromSource
	if ref := src.CredentialsSecretRef; ref != nil {
		// The Secret's keys are the variables the runtime reads (HF_TOKEN,
		// AWS_ACCESS_KEY_ID, ..., AUTHORIZATION), as the API documents.
		envFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: *ref}}}
	}

	retries := int32(3)
	if dl.Retries != nil {
		retries = *dl.Retries
	}
	labels := map[string]string{
		LabelName: "leo-runtime", LabelComponent: "prepare", LabelManagedBy: ManagedBy,
		LabelArtifact: ArtifactHash(claim, dir),
	}
	return &batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name: PrepareJobName(claim, dir), Namespace: m.Namespace, Labels: labels,
			Annotations: map[string]string{
				AnnotationArtifactPath:  ArtifactPath(m.Spec),
				GenerationAnnotation(m): strconv.FormatInt(m.Generation, 10),
			},
		},
		Spec: batchv1.JobSpec{
			BackoffLimit:     &retries,
			PodFailurePolicy: failFast("prepare", PrepareExitPermanent),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: jobPodSpec(volumes, corev1.Container{
					Name: "prepare", Image: cfg.RuntimeImage, ImagePullPolicy: cfg.ImagePullPolicy,
					Args: args, Env: env, EnvFrom: envFrom,
					VolumeMounts: mounts,
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU:    resource.MustParse("1"),
						corev1.ResourceMemory: resource.MustParse("512Mi"),
					}},
					SecurityContext: containerSecurityContext(),
					// The result is written to /dev/termination-log; a crash
					// before that leaves the log's tail there instead.
					TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				}),
			},
		},
	}
}

func modelLabels(model, component string) map[string]string {
	return map[string]string{
		LabelName: "leo-runtime", LabelComponent: component, LabelManagedBy: ManagedBy,
		LabelModel: boundedName(maxLabelValue, model),
	}
}

func stripScheme(uri string) string {
	if _, rest, ok := strings.Cut(uri, "://"); ok {
		return rest
	}
	return uri
}

func quantizationOf(spec servingv1alpha1.LlamaModelSpec) servingv1alpha1.Quantization {
	if spec.Quantization == "" {
		return servingv1alpha1.QuantizationNone
	}
	return spec.Quantization
}

func formatOf(spec servingv1alpha1.LlamaModelSpec) servingv1alpha1.ModelFormat {
	if spec.Format == "" {
		return servingv1alpha1.ModelFormatAuto
	}
	return spec.Format
}

// ModelVolume mounts a Ready model's claim read-only at /models and returns
// the artifact's path inside the container.
func ModelVolume(m *servingv1alpha1.LlamaModel) (corev1.Volume, corev1.VolumeMount, string, error) {
	a := m.Status.Artifact
	if a == nil {
		return corev1.Volume{}, corev1.VolumeMount{}, "", fmt.Errorf("LlamaModel %s has no artifact yet", m.Name)
	}
	v, vm := claimVolume("model", a.ClaimName, ModelsMount, true)
	return v, vm, path.Join(ModelsMount, a.Path), nil
}

// GenerationAnnotation is the annotation of a prepare Job that records the
// generation of the model m when it made or joined the Job.
func GenerationAnnotation(m *servingv1alpha1.LlamaModel) string {
	return AnnotationGenerationPrefix + string(m.UID)
}

// CleanupJob removes a deleted model's artifact directory from an existing
// claim (a claim the operator made goes whole instead), with
// `leo-runtime prune`, which refuses any directory outside the claim's
// leo-models/ tree.
func CleanupJob(m *servingv1alpha1.LlamaModel, cfg Config) *batchv1.Job {
	claim := CacheClaimName(m)
	dir := ArtifactDir(m.Spec)
	cacheVol, cacheMount := claimVolume("cache", claim, ModelsMount, false)
	tmpVol, tmpMount := scratchVolume()
	labels := map[string]string{
		LabelName: "leo-runtime", LabelComponent: "cleanup", LabelManagedBy: ManagedBy,
		LabelArtifact: ArtifactHash(claim, dir),
	}
	return &batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "leo-cleanup-" + shortHash(16, claim, dir), Namespace: m.Namespace, Labels: labels,
			Annotations: map[string]string{AnnotationArtifactPath: ArtifactPath(m.Spec)},
		},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr(int32(2)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: jobPodSpec([]corev1.Volume{cacheVol, tmpVol}, corev1.Container{
					Name: "cleanup", Image: cfg.RuntimeImage, ImagePullPolicy: cfg.ImagePullPolicy,
					Args:            []string{"prune", "--root", ModelsMount, path.Join(ModelsMount, dir)},
					VolumeMounts:    []corev1.VolumeMount{cacheMount, tmpMount},
					SecurityContext: containerSecurityContext(),
				}),
			},
		},
	}
}
