package desired

import (
	"net"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

// Ports and paths of the runtime pods.
const (
	runtimePort = 8080
	servicePort = 80
	keysMount   = "/etc/leo/keys"
)

// Keys of the endpoint's keys Secret, as Azure ML names them.
const (
	PrimaryKey   = "primaryKey"
	SecondaryKey = "secondaryKey"
)

// DeploymentName is the name of the Deployment and the Service of one
// deployment of an endpoint.
func DeploymentName(e *servingv1alpha1.OnlineEndpoint, d string) string {
	return dnsLabel(boundedName(maxLabelValue, e.Name, d))
}

// EndpointServiceName is the name of the endpoint's own Service.
func EndpointServiceName(e *servingv1alpha1.OnlineEndpoint) string {
	return dnsLabel(boundedName(maxLabelValue, e.Name))
}

// KeysSecretName is the name of the Secret with the endpoint's keys.
func KeysSecretName(e *servingv1alpha1.OnlineEndpoint) string {
	return boundedName(253, e.Name, "keys")
}

// EndpointSelector selects every runtime pod of an endpoint.
func EndpointSelector(e *servingv1alpha1.OnlineEndpoint) map[string]string {
	return map[string]string{LabelEndpoint: boundedName(maxLabelValue, e.Name)}
}

// deploymentSelector selects the runtime pods of one deployment.
func deploymentSelector(e *servingv1alpha1.OnlineEndpoint, d string) map[string]string {
	return map[string]string{LabelEndpoint: boundedName(maxLabelValue, e.Name), LabelDeployment: d}
}

func endpointLabels(e *servingv1alpha1.OnlineEndpoint) map[string]string {
	l := EndpointSelector(e)
	l[LabelName], l[LabelInstance], l[LabelComponent], l[LabelManagedBy] =
		"leo-runtime", boundedName(maxLabelValue, e.Name), "online", ManagedBy
	return l
}

// InitialReplicas is the replica count of a new Deployment: instanceCount,
// or minInstances for an autoscaled one.
func InitialReplicas(d servingv1alpha1.EndpointDeployment) int32 {
	if d.ScaleSettings.Type == servingv1alpha1.ScaleTypeTargetUtilization {
		if d.ScaleSettings.MinInstances != nil {
			return *d.ScaleSettings.MinInstances
		}
		return 1
	}
	if d.InstanceCount != nil {
		return *d.InstanceCount
	}
	return 1
}

// OwnsReplicas says whether the operator sets a deployment's replicas:
// yes for scale type default (instanceCount is the truth); no for
// target_utilization, where the autoscaler (or an HPA) writes them through
// the scale subresource and the operator must not fight it.
func OwnsReplicas(d servingv1alpha1.EndpointDeployment) bool {
	return d.ScaleSettings.Type != servingv1alpha1.ScaleTypeTargetUtilization
}

// RuntimeDeployment is the Deployment of one deployment's runtime pods,
// serving the model with `leo-runtime serve`. replicas is nil when the
// operator does not own the count (see OwnsReplicas).
func RuntimeDeployment(e *servingv1alpha1.OnlineEndpoint, d servingv1alpha1.EndpointDeployment, m *servingv1alpha1.LlamaModel, replicas *int32, cfg Config) (*appsv1.Deployment, error) {
	modelVol, modelMount, modelPath, err := ModelVolume(m)
	if err != nil {
		return nil, err
	}
	tmpVol, tmpMount := scratchVolume()
	shmVol := corev1.Volume{Name: "shm", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}}
	volumes := []corev1.Volume{modelVol, shmVol, tmpVol}
	mounts := []corev1.VolumeMount{modelMount, {Name: "shm", MountPath: "/dev/shm"}, tmpMount}

	rs := d.RequestSettings
	perInstance := rs.MaxConcurrentRequestsPerInstance
	if perInstance < 1 {
		perInstance = 1
	}
	slots := perInstance
	if d.Runtime.MaxBatchSize > 0 {
		slots = d.Runtime.MaxBatchSize
	}
	timeout := rs.RequestTimeoutMs
	if timeout < 1 {
		timeout = 5000
	}
	args := []string{"serve",
		"--model", modelPath,
		"--model-name", m.Name,
		"--addr", "0.0.0.0:" + strconv.Itoa(runtimePort),
		"--max-concurrent-requests", strconv.Itoa(int(slots)),
		// Azure ML answers 429 past twice maxConcurrentRequestsPerInstance
		// per instance: as many waiting as working.
		"--max-queued-requests", strconv.Itoa(int(perInstance)),
		"--request-timeout-ms", strconv.Itoa(int(timeout)),
	}
	if d.Runtime.ContextLength > 0 {
		args = append(args, "--ctx-size", strconv.Itoa(int(d.Runtime.ContextLength)))
	}
	if w := rs.MaxQueueWaitMs; w != nil && *w > 0 { // 0: no limit but the request timeout
		args = append(args, "--max-queue-wait-ms", strconv.Itoa(int(*w)))
	}
	if d.Runtime.KVCacheTokens > 0 {
		args = append(args, "--kv-cache-tokens", strconv.Itoa(int(d.Runtime.KVCacheTokens)))
	}
	if e.Spec.AuthMode != servingv1alpha1.AuthModeNone {
		args = append(args, "--keys-file", keysMount)
		volumes = append(volumes, corev1.Volume{Name: "keys", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: KeysSecretName(e),
			Items:      []corev1.KeyToPath{{Key: PrimaryKey, Path: "primary"}, {Key: SecondaryKey, Path: "secondary"}},
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "keys", MountPath: keysMount, ReadOnly: true})
	}

	labels := endpointLabels(e)
	labels[LabelDeployment] = d.Name
	liveness, readiness := probeOr(d.LivenessProbe), probeOr(d.ReadinessProbe)
	maxUnavailable, maxSurge := intstr.FromInt32(0), intstr.FromInt32(1)
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: DeploymentName(e, d.Name), Namespace: e.Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: replicas,
			Selector: &metav1.LabelSelector{MatchLabels: deploymentSelector(e, d.Name)},
			// Never below the serving capacity during a rollout: a new pod
			// must be ready (its model loaded) before an old one goes.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: &maxUnavailable, MaxSurge: &maxSurge,
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      labels,
					Annotations: map[string]string{"kubectl.kubernetes.io/default-container": "runtime"},
				},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr(false),
					EnableServiceLinks:           ptr(false),
					SecurityContext:              podSecurityContext(),
					NodeSelector:                 d.NodeSelector,
					Tolerations:                  d.Tolerations,
					RuntimeClassName:             d.RuntimeClassName,
					// serve drains for 5s and lets requests finish for 20s.
					TerminationGracePeriodSeconds: ptr(int64(30)),
					Volumes:                       volumes,
					Containers: []corev1.Container{{
						Name: runtimeContainer, Image: cfg.RuntimeImage, ImagePullPolicy: cfg.ImagePullPolicy,
						Args:         args,
						Ports:        []corev1.ContainerPort{{Name: "http", ContainerPort: runtimePort, Protocol: corev1.ProtocolTCP}},
						Env:          envVars(d.EnvironmentVariables),
						Resources:    resources(d.Resources),
						VolumeMounts: mounts,
						// serve listens at once and answers /readyz 200 only once
						// the model is loaded: up to 30 minutes for a big model
						// from a slow volume, before liveness checks begin. Every
						// 2 s, so that a pod woken from zero serves soon after
						// its model is loaded (a held request waits on it).
						StartupProbe: &corev1.Probe{
							ProbeHandler:  httpGet("/readyz"),
							PeriodSeconds: 2, TimeoutSeconds: 2, FailureThreshold: 900,
						},
						LivenessProbe:            probe("/healthz", liveness, true),
						ReadinessProbe:           probe("/readyz", readiness, false),
						SecurityContext:          containerSecurityContext(),
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
					}},
				},
			},
		},
	}, nil
}

// RuntimeService is the Service in front of one deployment's pods.
func RuntimeService(e *servingv1alpha1.OnlineEndpoint, d string) *corev1.Service {
	labels := endpointLabels(e)
	labels[LabelDeployment] = d
	return service(DeploymentName(e, d), e.Namespace, labels, deploymentSelector(e, d))
}

// EndpointService is the endpoint's own Service, the target of its scoring
// URI until the gateway routes by traffic weights: it selects the pods of
// the deployment with the largest share of traffic (see PrimaryDeployment).
func EndpointService(e *servingv1alpha1.OnlineEndpoint, primary string) *corev1.Service {
	return service(EndpointServiceName(e), e.Namespace, endpointLabels(e), deploymentSelector(e, primary))
}

func service(name, ns string, labels, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector,
			Ports: []corev1.ServicePort{{
				Name: "http", Port: servicePort, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// PrimaryDeployment is the deployment with the largest traffic share (the
// first by name on a tie), or "" when no deployment gets traffic.
func PrimaryDeployment(e *servingv1alpha1.OnlineEndpoint) string {
	names := make([]string, 0, len(e.Spec.Traffic))
	for n := range e.Spec.Traffic {
		names = append(names, n)
	}
	sort.Strings(names)
	best, share := "", int32(0)
	for _, n := range names {
		if e.Spec.Traffic[n] > share {
			best, share = n, e.Spec.Traffic[n]
		}
	}
	if best == "" && len(e.Spec.Traffic) == 0 && len(e.Spec.Deployments) == 1 {
		// One deployment and no split: it takes everything, as in Azure ML
		// when the only deployment is created.
		return e.Spec.Deployments[0].Name
	}
	return best
}

// ServiceURL is the in-cluster base URL of a Service made here.
func ServiceURL(name, ns string, cfg Config) string {
	domain := cfg.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	return "http://" + name + "." + ns + ".svc." + domain
}

// EndpointBaseURL is the base of an endpoint's scoring URI (…/score) and
// OpenAI base URL (…/v1): its path on the gateway, or, without one, its
// own Service.
func EndpointBaseURL(e *servingv1alpha1.OnlineEndpoint, cfg Config) string {
	if cfg.GatewayURL != "" {
		return strings.TrimRight(cfg.GatewayURL, "/") + "/endpoints/" + e.Namespace + "/" + e.Name
	}
	return ServiceURL(EndpointServiceName(e), e.Namespace, cfg)
}

// KeysSecret is the endpoint's keys Secret with the given keys and the
// rotation values they honour.
func KeysSecret(e *servingv1alpha1.OnlineEndpoint, primary, secondary, primaryFor, secondaryFor string) *corev1.Secret {
	ann := map[string]string{}
	if primaryFor != "" {
		ann[AnnotationPrimaryRotatedFor] = primaryFor
	}
	if secondaryFor != "" {
		ann[AnnotationSecondaryRotatedFor] = secondaryFor
	}
	if len(ann) == 0 {
		ann = nil
	}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: KeysSecretName(e), Namespace: e.Namespace, Labels: endpointLabels(e), Annotations: ann},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{PrimaryKey: []byte(primary), SecondaryKey: []byte(secondary)},
	}
}

func httpGet(path string) corev1.ProbeHandler {
	return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}}
}

// probeOr is the spec's probe settings, or Azure ML's defaults.
func probeOr(p *servingv1alpha1.ProbeSettings) servingv1alpha1.ProbeSettings {
	out := servingv1alpha1.ProbeSettings{PeriodSeconds: 10, TimeoutSeconds: 2, SuccessThreshold: 1, FailureThreshold: 30}
	if p == nil {
		out.InitialDelaySeconds = ptr(int32(10))
		return out
	}
	if p.InitialDelaySeconds != nil {
		out.InitialDelaySeconds = p.InitialDelaySeconds
	} else {
		out.InitialDelaySeconds = ptr(int32(10))
	}
	if p.PeriodSeconds > 0 {
		out.PeriodSeconds = p.PeriodSeconds
	}
	if p.TimeoutSeconds > 0 {
		out.TimeoutSeconds = p.TimeoutSeconds
	}
	if p.SuccessThreshold > 0 {
		out.SuccessThreshold = p.SuccessThreshold
	}
	if p.FailureThreshold > 0 {
		out.FailureThreshold = p.FailureThreshold
	}
	return out
}

func probe(path string, s servingv1alpha1.ProbeSettings, liveness bool) *corev1.Probe {
	success := s.SuccessThreshold
	if liveness {
		success = 1 // the only value Kubernetes allows for liveness
	}
	return &corev1.Probe{
		ProbeHandler:        httpGet(path),
		InitialDelaySeconds: *s.InitialDelaySeconds,
		PeriodSeconds:       s.PeriodSeconds, TimeoutSeconds: s.TimeoutSeconds,
		SuccessThreshold: success, FailureThreshold: s.FailureThreshold,
	}
}

// ReadyPodAddr is the "ip:port" where a pod of leo's (a runtime or a
// gateway pod) serves HTTP, on its container port named http (8080 when
// it names none), once it is running and ready; false before, and once it
// is being deleted.
func ReadyPodAddr(p *corev1.Pod) (string, bool) { return ReadyPodPort(p, "http", runtimePort) }

// GatewayMetricsPort is where leo-gateway serves /metrics unless its pod
// names a container port "metrics" (its --metrics-addr default).
const GatewayMetricsPort = 9090

// ReadyPodPort is ReadyPodAddr for the container port named name (def
// when the pod names none).
func ReadyPodPort(p *corev1.Pod, name string, def int32) (string, bool) {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
		return "", false
	}
	ready := false
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		return "", false
	}
	port, ok := ContainerPort(p, name)
	if !ok {
		port = def
	}
	return net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port))), true
}

// ContainerPort is the pod's container port named name: that of leo's own
// container ("runtime" or "gateway") when it has one, so that a sidecar a
// service mesh injects (before or after it) with a port of the same name
// does not win; else that of any container.
func ContainerPort(p *corev1.Pod, name string) (int32, bool) {
	var other int32
	found := false
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name != name {
				continue
			}
			if c.Name == runtimeContainer || c.Name == gatewayContainer {
				return cp.ContainerPort, true
			}
			if !found {
				other, found = cp.ContainerPort, true
			}
		}
	}
	return other, found
}

// The names of leo's containers in its pods (RuntimeDeployment, the chart's gateway).
const (
	runtimeContainer = "runtime"
	gatewayContainer = "gateway"
)
