package desired

import (
	"sort"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

// Config is what the operator's installation decides for every object: the
// runtime image and how names are resolved.
type Config struct {
	// RuntimeImage is the leo-runtime image of prepare, serve and batch pods.
	RuntimeImage string
	// ImagePullPolicy of those pods; empty leaves Kubernetes' default.
	ImagePullPolicy corev1.PullPolicy
	// ClusterDomain is the cluster's DNS domain, for the scoring URI.
	ClusterDomain string
	// GatewayURL is the base URL of leo-gateway (e.g.
	// http://leo-gateway.leo-system.svc.cluster.local): scoring URIs are
	// <GatewayURL>/endpoints/<namespace>/<endpoint>/score. Empty: they
	// point at each endpoint's own Service (no split, no key check there
	// but the pods').
	GatewayURL string
}

// Where volumes are mounted in leo's pods.
const (
	ModelsMount = "/models"
	// nonRootID is the user and group leo's containers run as (the
	// "nonroot" user of distroless images).
	nonRootID = 65532
)

// podSecurityContext runs as a non-root user with the runtime's default
// seccomp profile; fsGroup makes a fresh volume writable for that user.
func podSecurityContext() *corev1.PodSecurityContext {
	id := int64(nonRootID)
	onRootMismatch := corev1.FSGroupChangeOnRootMismatch
	return &corev1.PodSecurityContext{
		RunAsNonRoot:        ptr(true),
		RunAsUser:           &id,
		RunAsGroup:          &id,
		FSGroup:             &id,
		FSGroupChangePolicy: &onRootMismatch,
		SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// containerSecurityContext: no privilege escalation, no capabilities, and a
// read-only root filesystem (writes go to mounted volumes only).
func containerSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr(false),
		ReadOnlyRootFilesystem:   ptr(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// resources turns the spec's compute resources into a container's requests
// and limits: GPUs as the extended resource in limits (Kubernetes sets the
// request equal), CPU requested, memory requested and limited.
func resources(r servingv1alpha1.ComputeResources) corev1.ResourceRequirements {
	var out corev1.ResourceRequirements
	if r.GPUs > 0 {
		name := r.GPUResourceName
		if name == "" {
			name = "nvidia.com/gpu"
		}
		out.Limits = corev1.ResourceList{corev1.ResourceName(name): *resource.NewQuantity(int64(r.GPUs), resource.DecimalSI)}
	}
	if r.CPU != nil {
		out.Requests = corev1.ResourceList{corev1.ResourceCPU: *r.CPU}
	}
	if r.Memory != nil {
		if out.Requests == nil {
			out.Requests = corev1.ResourceList{}
		}
		if out.Limits == nil {
			out.Limits = corev1.ResourceList{}
		}
		out.Requests[corev1.ResourceMemory] = *r.Memory
		out.Limits[corev1.ResourceMemory] = *r.Memory
	}
	return out
}

// envVars lists the user's environment variables sorted by name, so that
// the pod template (and its hash) does not change with map order.
func envVars(m servingv1alpha1.EnvironmentVariables) []corev1.EnvVar {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]corev1.EnvVar, 0, len(names))
	for _, k := range names {
		out = append(out, corev1.EnvVar{Name: k, Value: m[k]})
	}
	return out
}

// scratchVolume is a writable /tmp for a read-only root filesystem.
func scratchVolume() (corev1.Volume, corev1.VolumeMount) {
	return corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.VolumeMount{Name: "tmp", MountPath: "/tmp"}
}

// claimVolume mounts a PersistentVolumeClaim.
func claimVolume(name, claim, mountPath string, readOnly bool) (corev1.Volume, corev1.VolumeMount) {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: readOnly},
		}},
		corev1.VolumeMount{Name: name, MountPath: mountPath, ReadOnly: readOnly}
}

func ptr[T any](v T) *T { return &v }

// jobPodSpec is the pod of one of leo's Jobs: never restarted in place (the
// Job retries with a new pod), no ServiceAccount token (the pods need no
// API access: the operator reads their logs and termination messages),
// no Service environment variables, non-root.
func jobPodSpec(volumes []corev1.Volume, c corev1.Container) corev1.PodSpec {
	return corev1.PodSpec{
		RestartPolicy:                corev1.RestartPolicyNever,
		AutomountServiceAccountToken: ptr(false),
		EnableServiceLinks:           ptr(false),
		SecurityContext:              podSecurityContext(),
		Volumes:                      volumes,
		Containers:                   []corev1.Container{c},
	}
}

// failFast is a Job's pod failure policy: the container's exit status
// permanent fails the Job at once (retrying cannot help), and a pod
// evicted or preempted does not count as a failure.
func failFast(container string, permanent int32) *batchv1.PodFailurePolicy {
	return &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
		{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
			ContainerName: ptr(container), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{permanent},
		}},
		{Action: batchv1.PodFailurePolicyActionIgnore, OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
			{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue},
		}},
	}}
}
