package desired

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var cfg = Config{RuntimeImage: "ghcr.io/leo-operator/leo-runtime:v0.1.0", ImagePullPolicy: corev1.PullIfNotPresent}

// golden compares objects, as YAML documents, with testdata/NAME.yaml.
func golden(t *testing.T, name string, objs ...any) {
	t.Helper()
	var b strings.Builder
	for i, o := range objs {
		y, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	path := filepath.Join("testdata", name+".yaml")
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./controllers/desired -update to write it)", err)
	}
	if b.String() != string(want) {
		t.Errorf("%s differs from what the builders make now; if the change is meant, run go test ./controllers/desired -update and review the diff.\ngot:\n%s", path, b.String())
	}
}

func hfModel() *servingv1alpha1.LlamaModel {
	size := resource.MustParse("40Gi")
	retries := int32(2)
	return &servingv1alpha1.LlamaModel{
		ObjectMeta: metav1.ObjectMeta{Name: "llama-2-7b-q4", Namespace: "team-a", Generation: 3, UID: "0c5e1a3b-7d2f-4e9a-9b1c-2f6d8e4a7c10"},
		Spec: servingv1alpha1.LlamaModelSpec{
			Source: servingv1alpha1.ModelSource{
				URI: "hf://meta-llama/Llama-2-7b-hf@main", Files: []string{"*.safetensors", "config.json", "tokenizer.model"},
				CredentialsSecretRef: &corev1.LocalObjectReference{Name: "hf-token"},
			},
			Format: servingv1alpha1.ModelFormatSafetensors, Quantization: servingv1alpha1.QuantizationQ4_0,
			Storage:  servingv1alpha1.ModelStorage{Size: &size},
			Download: servingv1alpha1.DownloadSettings{Timeout: "2h", StallTimeout: "60s", Retries: &retries},
		},
	}
}

func readyModel() *servingv1alpha1.LlamaModel {
	m := hfModel()
	m.Status.Phase = servingv1alpha1.ModelPhaseReady
	m.Status.Artifact = &servingv1alpha1.ModelArtifact{Path: ArtifactPath(m.Spec), ClaimName: CacheClaimName(m), SizeBytes: 3825807360, Format: "gguf", Quantization: "q4_0"}
	return m
}

func TestModelObjects(t *testing.T) {
	m := hfModel()
	golden(t, "llamamodel-hf", CacheClaim(m), PrepareJob(m, cfg))

	// A file on another claim, cached on an existing claim: the source claim
	// is mounted read-only, and no claim is made.
	p := hfModel()
	p.Spec.Source = servingv1alpha1.ModelSource{URI: "pvc://shared-weights/llama/llama-2-7b.Q8_0.gguf"}
	p.Spec.Storage = servingv1alpha1.ModelStorage{ExistingClaim: "model-cache"}
	p.Spec.Quantization, p.Spec.Format = "", ""
	if CacheClaim(p) != nil {
		t.Error("a model on an existing claim must not get a claim made")
	}
	golden(t, "llamamodel-pvc", PrepareJob(p, cfg), CleanupJob(p, cfg))
}

func TestArtifactDirIsSharedExactly(t *testing.T) {
	a, b := hfModel(), hfModel()
	b.Name = "another-name"
	if ArtifactDir(a.Spec) != ArtifactDir(b.Spec) {
		t.Fatal("two models with the same source and quantization must share the artifact directory")
	}
	if PrepareJobName("c", ArtifactDir(a.Spec)) != PrepareJobName("c", ArtifactDir(b.Spec)) {
		t.Fatal("... and the Job")
	}
	if PrepareJobName("c", ArtifactDir(a.Spec)) == PrepareJobName("d", ArtifactDir(a.Spec)) {
		t.Fatal("another claim is another download")
	}
	if !strings.HasPrefix(ArtifactDir(a.Spec), "leo-models/meta-llama-llama-2-7b-hf-main-") || !strings.HasSuffix(ArtifactDir(a.Spec), "/q4_0") {
		t.Errorf("artifact dir %q: want it readable (source, revision, quantization)", ArtifactDir(a.Spec))
	}
	for what, change := range map[string]func(*servingv1alpha1.LlamaModelSpec){
		"revision":     func(s *servingv1alpha1.LlamaModelSpec) { s.Source.URI = "hf://meta-llama/Llama-2-7b-hf@v2" },
		"quantization": func(s *servingv1alpha1.LlamaModelSpec) { s.Quantization = servingv1alpha1.QuantizationQ8_0 },
		"files":        func(s *servingv1alpha1.LlamaModelSpec) { s.Source.Files = []string{"*.gguf"} },
		"sha256":       func(s *servingv1alpha1.LlamaModelSpec) { s.Source.SHA256 = strings.Repeat("a", 64) },
		"format":       func(s *servingv1alpha1.LlamaModelSpec) { s.Format = servingv1alpha1.ModelFormatAuto },
	} {
		c := hfModel()
		change(&c.Spec)
		if ArtifactDir(c.Spec) == ArtifactDir(a.Spec) {
			t.Errorf("a different %s must not share the artifact directory", what)
		}
	}
	// Credentials, endpoint and download settings do not change the weights.
	c := hfModel()
	c.Spec.Source.CredentialsSecretRef = nil
	c.Spec.Source.Endpoint = "https://mirror.example"
	c.Spec.Download = servingv1alpha1.DownloadSettings{}
	if ArtifactDir(c.Spec) != ArtifactDir(a.Spec) {
		t.Error("credentials and mirrors must not change the artifact directory")
	}
}

func endpoint() *servingv1alpha1.OnlineEndpoint {
	mem := resource.MustParse("24Gi")
	cpu := resource.MustParse("4")
	return &servingv1alpha1.OnlineEndpoint{
		ObjectMeta: metav1.ObjectMeta{Name: "llama-chat", Namespace: "team-a", Generation: 2},
		Spec: servingv1alpha1.OnlineEndpointSpec{
			AuthMode: servingv1alpha1.AuthModeKey,
			Deployments: []servingv1alpha1.EndpointDeployment{{
				Name: "blue", Model: "llama-2-7b-q4", InstanceCount: ptr(int32(2)),
				RequestSettings: servingv1alpha1.RequestSettings{RequestTimeoutMs: 90000, MaxConcurrentRequestsPerInstance: 8},
				Resources:       servingv1alpha1.ComputeResources{GPUs: 1, GPUResourceName: "nvidia.com/gpu", Memory: &mem, CPU: &cpu},
				Placement: servingv1alpha1.Placement{
					NodeSelector:     map[string]string{"nvidia.com/gpu.present": "true"},
					Tolerations:      []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
					RuntimeClassName: ptr("nvidia"),
				},
				EnvironmentVariables: servingv1alpha1.EnvironmentVariables{"Z_LAST": "1", "A_FIRST": "x"},
				Runtime:              servingv1alpha1.RuntimeOptions{ContextLength: 4096, MaxBatchSize: 16},
				LivenessProbe:        &servingv1alpha1.ProbeSettings{InitialDelaySeconds: ptr(int32(0)), PeriodSeconds: 5, FailureThreshold: 3},
			}, {
				Name: "green", Model: "llama-2-7b-q4",
				ScaleSettings: servingv1alpha1.ScaleSettings{Type: servingv1alpha1.ScaleTypeTargetUtilization, MinInstances: ptr(int32(0)), MaxInstances: ptr(int32(4))},
			}},
			Traffic: map[string]int32{"blue": 90, "green": 10},
		},
	}
}

func TestEndpointObjects(t *testing.T) {
	e := endpoint()
	m := readyModel()
	blue, err := RuntimeDeployment(e, e.Spec.Deployments[0], m, ptr(InitialReplicas(e.Spec.Deployments[0])), cfg)
	if err != nil {
		t.Fatal(err)
	}
	green, err := RuntimeDeployment(e, e.Spec.Deployments[1], m, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "onlineendpoint", blue, green, RuntimeService(e, "blue"), EndpointService(e, PrimaryDeployment(e)),
		KeysSecret(e, "primary-key-value", "secondary-key-value", "", "2026-11-27"))

	if OwnsReplicas(e.Spec.Deployments[1]) || InitialReplicas(e.Spec.Deployments[1]) != 0 {
		t.Error("an autoscaled deployment starts at minInstances and its replicas are not the operator's")
	}
	if _, err := RuntimeDeployment(e, e.Spec.Deployments[0], hfModel(), nil, cfg); err == nil {
		t.Error("a model without an artifact must not give a Deployment")
	}
}

func TestPrimaryDeployment(t *testing.T) {
	for _, c := range []struct {
		traffic map[string]int32
		deps    []string
		want    string
	}{
		{map[string]int32{"blue": 90, "green": 10}, []string{"blue", "green"}, "blue"},
		{map[string]int32{"blue": 10, "green": 90}, []string{"blue", "green"}, "green"},
		{map[string]int32{"blue": 50, "green": 50}, []string{"blue", "green"}, "blue"},
		{map[string]int32{"blue": 0, "green": 0}, []string{"blue", "green"}, ""},
		{nil, []string{"solo"}, "solo"},
		{nil, []string{"blue", "green"}, ""},
	} {
		e := &servingv1alpha1.OnlineEndpoint{Spec: servingv1alpha1.OnlineEndpointSpec{Traffic: c.traffic}}
		for _, d := range c.deps {
			e.Spec.Deployments = append(e.Spec.Deployments, servingv1alpha1.EndpointDeployment{Name: d})
		}
		if got := PrimaryDeployment(e); got != c.want {
			t.Errorf("traffic %v over %v: primary %q, want %q", c.traffic, c.deps, got, c.want)
		}
	}
}

func TestBatchJob(t *testing.T) {
	temp, topP := 0.6, 0.9
	b := &servingv1alpha1.BatchDeployment{
		ObjectMeta: metav1.ObjectMeta{Name: "review-summaries", Namespace: "team-a"},
		Spec: servingv1alpha1.BatchDeploymentSpec{
			Model:         "llama-2-7b-q4",
			Input:         servingv1alpha1.BatchInput{URI: "pvc://batch-data/reviews/2026-11", Type: "uri_folder", Format: "csv", Column: "text"},
			Output:        servingv1alpha1.BatchOutput{URI: "pvc://batch-data/predictions/2026-11"},
			InstanceCount: 2,
			Settings: servingv1alpha1.BatchSettings{MiniBatchSize: 10, MaxConcurrencyPerInstance: 2, ErrorThreshold: ptr(int32(5)),
				RetrySettings: servingv1alpha1.RetrySettings{MaxRetries: ptr(int32(3)), Timeout: "300s"}},
			Parameters: servingv1alpha1.GenerationParameters{MaxNewTokens: 128, DoSample: true, Temperature: &temp, TopP: &topP, Stop: []string{"\n\n"}, Seed: ptr(int64(7))},
			Resources:  servingv1alpha1.ComputeResources{GPUs: 1},
			Suspend:    true,
		},
	}
	job, err := BatchJob(b, readyModel(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "batchdeployment", job)

	// Input on S3, output on a claim: only the output claim is mounted, writable.
	b.Spec.Input.URI = "s3://reviews/2026-11/"
	job, err = BatchJob(b, readyModel(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var data []corev1.Volume
	for _, v := range job.Spec.Template.Spec.Volumes {
		if strings.HasPrefix(v.Name, "data-") {
			data = append(data, v)
		}
	}
	if len(data) != 1 || data[0].PersistentVolumeClaim.ReadOnly {
		t.Errorf("volumes %+v: want the output claim alone, writable", data)
	}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("a", 240)
	n1, n2 := boundedName(63, long, "x"), boundedName(63, long, "y")
	if len(n1) > 63 || len(n2) > 63 || n1 == n2 {
		t.Errorf("bounded names %q and %q: want at most 63 characters and different", n1, n2)
	}
	if boundedName(63, "short", "name") != "short-name" {
		t.Error("a short name must be kept as it is")
	}
	if n := BatchJobName(&servingv1alpha1.BatchDeployment{ObjectMeta: metav1.ObjectMeta{Name: "reviews.2026-11"}}); n != "reviews-2026-11" {
		t.Errorf("batch Job name %q: want a DNS label (no dots)", n)
	}
	if dnsLabel("7b-chat") != "e-7b-chat" || dnsLabel("chat") != "chat" {
		t.Error("a Service name must start with a letter")
	}
	if s := slug("hf://Org/Repo@Rev/../x", 80); s != "hf-org-repo-rev-..-x" {
		t.Errorf("slug %q", s)
	}
}

// TestReadyPodPortPrefersLeosContainer: a service mesh's sidecar, injected
// before or after leo's container with a port of the same name, does not
// take leo's port; without leo's container any one's counts, and without
// the name the default does.
func TestReadyPodPortPrefersLeosContainer(t *testing.T) {
	pod := func(containers ...corev1.Container) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Containers: containers},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.9",
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	}
	port := func(name string, n int32) []corev1.ContainerPort {
		return []corev1.ContainerPort{{Name: name, ContainerPort: n}}
	}
	sidecar := corev1.Container{Name: "istio-proxy", Ports: port("http", 15001)}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"sidecar first", pod(sidecar, corev1.Container{Name: "runtime", Ports: port("http", 8080)}), "10.0.0.9:8080"},
		{"sidecar after", pod(corev1.Container{Name: "gateway", Ports: port("http", 8081)}, sidecar), "10.0.0.9:8081"},
		{"no leo container", pod(corev1.Container{Name: "app", Ports: port("http", 7000)}), "10.0.0.9:7000"},
		{"no such port", pod(corev1.Container{Name: "runtime"}), "10.0.0.9:8080"},
	} {
		if got, ok := ReadyPodAddr(c.pod); !ok || got != c.want {
			t.Errorf("%s: %q %v, want %q", c.name, got, ok, c.want)
		}
	}
}
