package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
	"github.com/leo-operator/leo/internal/testenv"
)

// TestKubeScaleFromZeroAndKeyRotation runs the gateway's cluster source
// against a real kube-apiserver: an autoscaled deployment at zero replicas
// is woken by the first request, which is held until a pod (a real
// runtime server on loopback, created by the test as the ReplicaSet
// controller and the kubelet would) is ready, and answered; then a key
// rotated in the Secret (as the operator rotates it) stops working within
// seconds while the other key never fails.
func TestKubeScaleFromZeroAndKeyRotation(t *testing.T) {
	_, cfg, k8s := testenv.StartForTest(t)
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}))
	zero := int32(0)
	oe := &servingv1alpha1.OnlineEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "chat"},
		Spec: servingv1alpha1.OnlineEndpointSpec{
			Deployments: []servingv1alpha1.EndpointDeployment{{
				Name: "blue", Model: "llama",
				ScaleSettings:   servingv1alpha1.ScaleSettings{Type: servingv1alpha1.ScaleTypeTargetUtilization, MinInstances: &zero},
				RequestSettings: servingv1alpha1.RequestSettings{RequestTimeoutMs: 30000, MaxConcurrentRequestsPerInstance: 4},
			}},
			Traffic: map[string]int32{"blue": 100},
		},
	}
	must(k8s.Create(ctx, oe))
	// What the operator makes for it: the keys Secret and the Deployment,
	// at minInstances (0) replicas.
	keys := desired.KeysSecret(oe, "primary-1", "secondary-1", "", "")
	must(k8s.Create(ctx, keys))
	model := &servingv1alpha1.LlamaModel{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "llama"},
		Status: servingv1alpha1.LlamaModelStatus{Artifact: &servingv1alpha1.ModelArtifact{ClaimName: "llama-cache", Path: "leo-models/llama/q8_0/model.gguf"}}}
	deploy, err := desired.RuntimeDeployment(oe, oe.Spec.Deployments[0], model, &zero, desired.Config{RuntimeImage: "leo-runtime:test"})
	must(err)
	must(k8s.Create(ctx, deploy))

	var src *Source
	g := New(Options{WakeTimeout: time.Minute, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Waker: WakerFunc(func(ctx context.Context, ns, ep, dep string) error { return src.Wake(ctx, ns, ep, dep) })})
	src, err = NewSource(cfg, g, slog.New(slog.NewTextHandler(io.Discard, nil)))
	must(err)
	go func() { _ = src.Run(ctx) }()
	f := &front{g: g, srv: httptest.NewServer(g)}
	t.Cleanup(f.srv.Close)
	waitFor(t, 30*time.Second, g.synced.Load, func() string { return "the gateway's first table" })

	// The ReplicaSet controller and the kubelet: a ready pod once the
	// Deployment asks for one.
	go func() {
		for ctx.Err() == nil {
			var d appsv1.Deployment
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(deploy), &d); err == nil && d.Spec.Replicas != nil && *d.Spec.Replicas >= 1 {
				p := startPod(t, "primary-1", "secondary-1")
				_, port, _ := strings.Cut(p.Addr, ":")
				n, _ := strconv.Atoi(port)
				testenv.RunReadyPod(t, k8s, &d, d.Name+"-pod-1", int32(n))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	start := time.Now()
	code, h, body := f.call(t, ctx, "/endpoints/team/chat/score", scoreBody, "Authorization", "Bearer primary-1")
	took := time.Since(start)
	if code != http.StatusOK || h.Get(HeaderDeployment) != "blue" || !strings.HasPrefix(body, `[{"0":`) {
		t.Fatalf("the first request at zero replicas: %d %v %s", code, h, body)
	}
	t.Logf("scale from zero: the first request was answered %v after it was sent (wake, pod ready, answer)", took.Round(time.Millisecond))
	var d appsv1.Deployment
	must(k8s.Get(ctx, client.ObjectKeyFromObject(deploy), &d))
	if *d.Spec.Replicas != 1 {
		t.Errorf("replicas after the wake: %d", *d.Spec.Replicas)
	}
	if got := metricValue(t, f, MetricRequests, `code="200"`); got != 1 {
		t.Errorf("requests_total{code=200} = %v", got)
	}

	// Rotate the primary key under load, in the Secret as the operator does.
	rotateUnderLoad(t, f, "/endpoints/team/chat/score", 8*time.Second, func() {
		var sec corev1.Secret
		must(k8s.Get(ctx, client.ObjectKeyFromObject(keys), &sec))
		sec.Data[desired.PrimaryKey] = []byte("primary-2")
		must(k8s.Update(ctx, &sec))
	})
}

// metricValue sums the gateway's samples of a metric whose labels contain
// match, read from its metrics listener.
func metricValue(t *testing.T, f *front, name, match string) float64 {
	t.Helper()
	sum := 0.0
	for _, line := range strings.Split(scrape(t, f.g), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, match) {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}
