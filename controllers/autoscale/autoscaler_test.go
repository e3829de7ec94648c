package autoscale_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers"
	"github.com/leo-operator/leo/controllers/autoscale"
	"github.com/leo-operator/leo/controllers/desired"
	"github.com/leo-operator/leo/gateway"
	"github.com/leo-operator/leo/internal/testenv"
	"github.com/leo-operator/leo/internal/testmodel"
	"github.com/leo-operator/leo/internal/testruntime"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testmodel.Cleanup()
	os.Exit(code)
}

// TestAutoscalerFollowsGatewayLoad runs the autoscaler in a manager against
// a real kube-apiserver, reading the metrics of a real gateway and of real
// runtime servers (standing for the pods, which the test creates and
// deletes as the ReplicaSet controller and the kubelet would): load
// through the gateway scales the deployment up at once; when it stops, the
// deployment comes down one instance per scaleDownDelay, each decision in
// the endpoint's status; a restarted manager carries on from there.
func TestAutoscalerFollowsGatewayLoad(t *testing.T) {
	_, cfg, k8s := testenv.StartForTest(t)
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}))
	one, three := int32(1), int32(3)
	oe := &servingv1alpha1.OnlineEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "chat"},
		Spec: servingv1alpha1.OnlineEndpointSpec{
			AuthMode: servingv1alpha1.AuthModeNone,
			Deployments: []servingv1alpha1.EndpointDeployment{{
				Name: "blue", Model: "llama",
				ScaleSettings: servingv1alpha1.ScaleSettings{Type: servingv1alpha1.ScaleTypeTargetUtilization,
					MinInstances: &one, MaxInstances: &three, TargetUtilizationPercentage: 50,
					PollingInterval: "1s", ScaleDownDelay: "3s"},
				RequestSettings: servingv1alpha1.RequestSettings{RequestTimeoutMs: 60000, MaxConcurrentRequestsPerInstance: 2},
			}},
			Traffic: map[string]int32{"blue": 100},
		},
	}
	must(k8s.Create(ctx, oe))
	model := &servingv1alpha1.LlamaModel{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "llama"},
		Status: servingv1alpha1.LlamaModelStatus{Artifact: &servingv1alpha1.ModelArtifact{ClaimName: "llama-cache", Path: "leo-models/llama/q8_0/model.gguf"}}}
	deploy, err := desired.RuntimeDeployment(oe, oe.Spec.Deployments[0], model, &one, desired.Config{RuntimeImage: "leo-runtime:test"})
	must(err)
	must(k8s.Create(ctx, deploy))

	// A gateway routing to the pods the "ReplicaSet controller" below runs,
	// with a pod object of its own so that the autoscaler reads it.
	g := gateway.New(gateway.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	gw := httptest.NewServer(g)
	t.Cleanup(gw.Close)
	gwMetrics := httptest.NewServer(g.MetricsHandler()) // as leo-gateway --metrics-addr
	t.Cleanup(gwMetrics.Close)
	testenv.CreateReadyPod(t, k8s, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "leo-gateway-0",
		Labels: map[string]string{desired.LabelName: autoscale.GatewayName}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "gateway", Image: "leo-gateway:test",
			Ports: []corev1.ContainerPort{{Name: "http"}, {Name: "metrics", ContainerPort: port(gwMetrics.URL)}}}}}}, port(gw.URL))
	// A gateway of an older release, being rolled by an upgrade: it declares
	// no metrics port and serves /metrics on its public one. The
	// autoscaler must read it there, or it would count it unreadable and
	// never scale down.
	old := gateway.New(gateway.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	oldMux := http.NewServeMux()
	oldMux.Handle("/metrics", old.MetricsHandler())
	oldMux.Handle("/", old)
	oldGW := httptest.NewServer(oldMux)
	t.Cleanup(oldGW.Close)
	testenv.CreateReadyPod(t, k8s, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "leo-gateway-old",
		Labels: map[string]string{desired.LabelName: autoscale.GatewayName}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "gateway", Image: "leo-gateway:old",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port(oldGW.URL)}}}}}}, port(oldGW.URL))
	rs := &replicaSet{t: t, k8s: k8s, deploy: deploy, g: g}
	go rs.run(ctx)

	manager := func(ctx context.Context) {
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: testenv.Scheme(), Cache: controllers.CacheOptions(),
			Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0", Logger: zap.New(zap.WriteTo(io.Discard))})
		must(err)
		must(mgr.Add(&autoscale.Autoscaler{Client: mgr.GetClient(), Log: mgr.GetLogger(), GatewayNamespace: "team"}))
		go func() { _ = mgr.Start(ctx) }()
	}
	mctx, stopManager := context.WithCancel(ctx)
	manager(mctx)

	testenv.Eventually(t, 30*time.Second, "the first pod answering through the gateway", func() error {
		resp, err := http.Post(gw.URL+"/endpoints/team/chat/score", "application/json",
			strings.NewReader(`{"input_data": {"input_string": ["Once"], "parameters": {"max_new_tokens": 1}}}`))
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	})

	// Three long requests in flight: one instance meant to carry one (2
	// at 50%) cannot carry them.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			body := `{"input_data": {"input_string": ["Once upon a time"], "parameters": {"max_new_tokens": 8000, "ignore_eos": true}}}`
			req, _ := http.NewRequestWithContext(loadCtx, http.MethodPost, gw.URL+"/endpoints/team/chat/score", strings.NewReader(body))
			if resp, err := http.DefaultClient.Do(req); err == nil {
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if loadCtx.Err() == nil {
					t.Errorf("a load request ended early: %d %s", resp.StatusCode, b)
				}
			}
		})
	}
	start := time.Now()
	waitReplicas(t, k8s, deploy, 3, 20*time.Second)
	t.Logf("3 requests in flight: scaled 1 → 3 after %v", time.Since(start).Round(time.Millisecond))
	stopLoad()
	wg.Wait()
	start = time.Now()
	waitReplicas(t, k8s, deploy, 1, 60*time.Second)
	t.Logf("load gone: back to 1 after %v", time.Since(start).Round(time.Millisecond))

	var got servingv1alpha1.OnlineEndpoint
	testenv.Eventually(t, 10*time.Second, "three decisions in the status", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(oe), &got); err != nil {
			return err
		}
		if len(got.Status.ScalingHistory) < 3 {
			return fmt.Errorf("%d decisions", len(got.Status.ScalingHistory))
		}
		return nil
	})
	var steps []string
	var removals []time.Time
	for _, d := range got.Status.ScalingHistory {
		steps = append(steps, fmt.Sprintf("%d→%d", d.From, d.To))
		t.Logf("history: %s %s %d → %d: %s", d.Time.Format(time.RFC3339), d.Deployment, d.From, d.To, d.Reason)
		if d.To < d.From {
			removals = append(removals, d.Time.Time)
		}
	}
	if strings.Join(steps, " ") != "1→3 3→2 2→1" {
		t.Errorf("status.scalingHistory: %v, want 1→3 3→2 2→1", steps)
	}
	if len(removals) == 2 && removals[1].Sub(removals[0]) < 3*time.Second {
		t.Errorf("two removals %v apart (scaleDownDelay 3s)", removals[1].Sub(removals[0]))
	}

	// A new manager: it neither resets nor changes anything at rest.
	stopManager()
	manager(ctx)
	time.Sleep(4 * time.Second)
	var after servingv1alpha1.OnlineEndpoint
	must(k8s.Get(ctx, client.ObjectKeyFromObject(oe), &after))
	var d appsv1.Deployment
	must(k8s.Get(ctx, client.ObjectKeyFromObject(deploy), &d))
	if *d.Spec.Replicas != 1 || len(after.Status.ScalingHistory) != len(got.Status.ScalingHistory) {
		t.Errorf("after a restart at rest: %d replicas, %d decisions (were %d)", *d.Spec.Replicas, len(after.Status.ScalingHistory), len(got.Status.ScalingHistory))
	}
}

// replicaSet plays the ReplicaSet controller and the kubelet for one
// Deployment: it keeps as many ready pods, each a real runtime server, as
// the Deployment asks for, and tells the gateway where they are.
type replicaSet struct {
	t      *testing.T
	k8s    client.Client
	deploy *appsv1.Deployment
	g      *gateway.Gateway
	pods   []*corev1.Pod
	n      int
}

func (r *replicaSet) run(ctx context.Context) {
	for ctx.Err() == nil {
		var d appsv1.Deployment
		if err := r.k8s.Get(ctx, client.ObjectKeyFromObject(r.deploy), &d); err == nil && d.Spec.Replicas != nil {
			want := int(*d.Spec.Replicas)
			changed := false
			for len(r.pods) < want {
				srv := testruntime.Start(r.t)
				r.n++
				r.pods = append(r.pods, testenv.RunReadyPod(r.t, r.k8s, &d, fmt.Sprintf("%s-%d", d.Name, r.n), port(srv.URL)))
				changed = true
			}
			for len(r.pods) > want {
				last := r.pods[len(r.pods)-1]
				_ = r.k8s.Delete(ctx, last)
				r.pods = r.pods[:len(r.pods)-1]
				changed = true
			}
			if changed {
				var addrs []string
				for _, p := range r.pods {
					addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p.Spec.Containers[0].Ports[0].ContainerPort))
				}
				r.g.SetEndpoints([]gateway.Endpoint{{Namespace: "team", Name: "chat", Open: true, Deployments: []gateway.Deployment{{
					Name: "blue", Traffic: 100, Pods: addrs, Replicas: int32(want), MaxConcurrentPerInstance: 2, Timeout: time.Minute,
				}}}})
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func port(url string) int32 {
	n, _ := strconv.Atoi(url[strings.LastIndexByte(url, ':')+1:])
	return int32(n)
}

func waitReplicas(t *testing.T, k8s client.Client, deploy *appsv1.Deployment, want int32, timeout time.Duration) {
	t.Helper()
	testenv.EventuallyEvery(t, timeout, 100*time.Millisecond, fmt.Sprintf("%d replicas", want), func() error {
		var d appsv1.Deployment
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(deploy), &d); err != nil {
			return err
		}
		if *d.Spec.Replicas != want {
			return fmt.Errorf("%d replicas", *d.Spec.Replicas)
		}
		return nil
	})
}
