package scale_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers"
	"github.com/leo-operator/leo/controllers/desired"
	"github.com/leo-operator/leo/internal/testenv"
)

// endpoints is how many OnlineEndpoints the operator reconciles from
// scratch: the figure.
const endpoints = 200

// figures are what a run measured.
type figures struct {
	settle       time.Duration  // from the manager's start to its last write
	writes       map[string]int // the first manager's writes, by kind
	total        int
	restartReads int // reconciles of the restarted manager
	restart      int // its writes: must be 0
}

// TestSteadyStateMakesNoWrites: a restarted operator reconciles every
// settled endpoint and model again and makes no API write.
func TestSteadyStateMakesNoWrites(t *testing.T) {
	f := settle(t, endpoints)
	t.Logf("%d endpoints settled in %.1fs with %d writes %v; restarted, %d reconciles made %d writes",
		endpoints, f.settle.Seconds(), f.total, f.writes, f.restartReads, f.restart)
	if f.restart != 0 {
		t.Errorf("the restarted operator made %d writes on a settled cluster, want 0", f.restart)
	}
}

// BenchmarkSettle200Endpoints prints how long 200 endpoints take to settle
// from scratch and the API writes that takes.
func BenchmarkSettle200Endpoints(b *testing.B) {
	for range b.N {
		f := settle(b, endpoints)
		b.ReportMetric(f.settle.Seconds(), "s-to-settle")
		b.ReportMetric(float64(f.total), "writes")
		b.ReportMetric(float64(f.total)/endpoints, "writes/endpoint")
		b.ReportMetric(float64(f.restart), "writes-after-restart")
		kinds := make([]string, 0, len(f.writes))
		for k := range f.writes {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		var parts []string
		for _, k := range kinds {
			parts = append(parts, fmt.Sprintf("%s %d", k, f.writes[k]))
		}
		fmt.Printf("%d endpoints: settled in %.2fs; %d writes (%s); a restarted manager: %d reconciles, %d writes\n",
			endpoints, f.settle.Seconds(), f.total, strings.Join(parts, ", "), f.restartReads, f.restart)
	}
}

func settle(t testing.TB, n int) figures {
	t.Helper()
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	// Room for 3 Services per endpoint: envtest's default range is a /24.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.0.0.0/16")
	t.Cleanup(func() { _ = env.Stop() })
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := "scale"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// A model that is Ready already (its files cached, its Job cleaned up),
	// and n endpoints using it, before the operator starts.
	m := &servingv1alpha1.LlamaModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "llama"},
		Spec:       servingv1alpha1.LlamaModelSpec{Source: servingv1alpha1.ModelSource{URI: "https://models.example/llama.gguf"}},
	}
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.Status = servingv1alpha1.LlamaModelStatus{
		ObservedGeneration: m.Generation, Phase: servingv1alpha1.ModelPhaseReady,
		Artifact: &servingv1alpha1.ModelArtifact{Path: desired.ArtifactPath(m.Spec), ClaimName: desired.CacheClaimName(m), SizeBytes: 1, SHA256: strings.Repeat("0", 64), Format: "gguf", Quantization: "none"},
	}
	if err := k8s.Status().Update(ctx, m); err != nil {
		t.Fatal(err)
	}
	// Each with a plain deployment and an autoscaled one, resources, a
	// variable and a node selector: every kind of field the operator sets.
	cpu, mem := resource.MustParse("500m"), resource.MustParse("24Gi")
	for i := range n {
		e := &servingv1alpha1.OnlineEndpoint{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("endpoint-%03d", i)},
			Spec: servingv1alpha1.OnlineEndpointSpec{
				Deployments: []servingv1alpha1.EndpointDeployment{
					{Name: "blue", Model: "llama", InstanceCount: ptr(int32(2)),
						Resources:            servingv1alpha1.ComputeResources{GPUs: 1, CPU: &cpu, Memory: &mem},
						EnvironmentVariables: servingv1alpha1.EnvironmentVariables{"B": "2", "A": "1"},
						Placement:            servingv1alpha1.Placement{NodeSelector: map[string]string{"gpu": "h100"}}},
					{Name: "green", Model: "llama", ScaleSettings: servingv1alpha1.ScaleSettings{
						Type: servingv1alpha1.ScaleTypeTargetUtilization, MinInstances: ptr(int32(0)), MaxInstances: ptr(int32(3))}},
				},
				Traffic: map[string]int32{"blue": 100},
			},
		}
		if err := k8s.Create(ctx, e); err != nil {
			t.Fatal(err)
		}
	}

	var f figures
	first := &counter{byKind: map[string]int{}}
	start := time.Now()
	stop := startManager(t, cfg, first)
	testenv.EventuallyEvery(t, 2*time.Minute, 500*time.Millisecond, "every endpoint settled", func() error {
		var list servingv1alpha1.OnlineEndpointList
		if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Status.ObservedGeneration != e.Generation || meta.FindStatusCondition(e.Status.Conditions, servingv1alpha1.ConditionDeploymentsReady) == nil || e.Status.KeysSecretName == "" {
				return fmt.Errorf("endpoint %s not reconciled", e.Name)
			}
		}
		var deps appsv1.DeploymentList
		if err := k8s.List(ctx, &deps, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(deps.Items) != 2*n {
			return fmt.Errorf("%d Deployments of %d", len(deps.Items), 2*n)
		}
		// Settled: no write for a second.
		if time.Since(first.lastWrite()) < time.Second {
			return fmt.Errorf("still writing")
		}
		return nil
	})
	f.settle = first.lastWrite().Sub(start)
	stop()
	f.writes, f.total = first.snapshot()

	// A new manager, as after a restart or a leader change, on the settled
	// cluster: it reconciles everything again and must write nothing.
	before := reconciles(t)
	again := &counter{byKind: map[string]int{}}
	stop = startManager(t, cfg, again)
	testenv.EventuallyEvery(t, 2*time.Minute, 500*time.Millisecond, "the restarted manager reconciled every endpoint", func() error {
		if got := reconciles(t) - before; got < n {
			return fmt.Errorf("%d reconciles", got)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // and anything they would have queued
	stop()
	f.restartReads = reconciles(t) - before
	var byKind map[string]int
	byKind, f.restart = again.snapshot()
	if f.restart != 0 {
		t.Logf("writes after the restart: %v", byKind)
	}
	return f
}

func startManager(t testing.TB, cfg *rest.Config, c *counter) (stop func()) {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 500, 1000 // the operator's own limit is not what is measured
	cfg.Wrap(c.wrap)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: testenv.Scheme(), Cache: controllers.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		// Two managers in one process register the same controller names.
		Controller: config.Controller{SkipNameValidation: ptr(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.SetupAll(mgr, controllers.Options{Config: desired.Config{RuntimeImage: "leo-runtime:test"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
}

// reconciles is the number of OnlineEndpoint reconciles so far in this
// process (controller-runtime's own counter).
func reconciles(t testing.TB) int {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label(m, "controller") == "onlineendpoint" {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return int(n)
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// counter counts a client's API writes (anything but GET) by resource.
type counter struct {
	mu     sync.Mutex
	byKind map[string]int
	total  int
	last   time.Time
}

func (c *counter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.Method != http.MethodGet {
			c.mu.Lock()
			c.byKind[resourceOf(r.URL.Path)]++
			c.total++
			c.last = time.Now()
			c.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

func (c *counter) lastWrite() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *counter) snapshot() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.byKind))
	for k, v := range c.byKind {
		out[k] = v
	}
	return out, c.total
}

// resourceOf names the resource of an API path: .../namespaces/NS/RESOURCE[/NAME[/SUB]].
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			res := parts[i+2]
			if i+4 < len(parts) {
				res += "/" + parts[i+4]
			}
			return res
		}
	}
	return path
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func ptr[T any](v T) *T { return &v }
