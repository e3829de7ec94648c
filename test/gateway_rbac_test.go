package test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
	"github.com/leo-operator/leo/gateway"
	"github.com/leo-operator/leo/internal/testenv"
)

// checkGatewayPermissions runs the gateway's cluster source as the chart's
// gateway ServiceAccount (leo-system/leo-gateway): it must see an endpoint
// with its keys and Deployment, and wake that Deployment from zero.
func checkGatewayPermissions(t *testing.T, admin *rest.Config, k8s client.Client) {
	t.Helper()
	ctx := t.Context()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}); err != nil {
		t.Fatal(err)
	}
	zero := int32(0)
	oe := &servingv1alpha1.OnlineEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "chat"},
		Spec: servingv1alpha1.OnlineEndpointSpec{
			Deployments: []servingv1alpha1.EndpointDeployment{{Name: "blue", Model: "llama",
				ScaleSettings: servingv1alpha1.ScaleSettings{Type: servingv1alpha1.ScaleTypeTargetUtilization, MinInstances: &zero}}},
		},
	}
	model := &servingv1alpha1.LlamaModel{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "llama"},
		Status: servingv1alpha1.LlamaModelStatus{Artifact: &servingv1alpha1.ModelArtifact{ClaimName: "c", Path: "leo-models/m/q8_0/model.gguf"}}}
	deploy, err := desired.RuntimeDeployment(oe, oe.Spec.Deployments[0], model, &zero, desired.Config{RuntimeImage: "leo-runtime:test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{oe, desired.KeysSecret(oe, "key-1", "key-2", "", ""), deploy} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	as := rest.CopyConfig(admin)
	as.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:leo-system:leo-gateway"}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var src *gateway.Source
	g := gateway.New(gateway.Options{Log: quiet, WakeTimeout: 2 * time.Second,
		Waker: gateway.WakerFunc(func(ctx context.Context, ns, ep, dep string) error { return src.Wake(ctx, ns, ep, dep) })})
	src, err = gateway.NewSource(as, g, quiet)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		if err := src.Run(runCtx); err != nil && runCtx.Err() == nil {
			t.Errorf("the gateway's source as its ServiceAccount: %v", err)
		}
	}()
	srv := httptest.NewServer(g)
	defer srv.Close()
	// Known endpoint, right key, no pod: held for the wake-up, which scales
	// the Deployment to 1; no pod comes, so 503 after the wake timeout.
	testenv.Eventually(t, 30*time.Second, "the gateway's view of team/chat", func() error {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/endpoints/team/chat/score", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer key-2")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "no ready instance") {
			return &unexpected{resp.StatusCode, string(b)}
		}
		return nil
	})
	var d appsv1.Deployment
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(deploy), &d); err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 1 {
		t.Errorf("the gateway did not wake the Deployment as its ServiceAccount: %d replicas", *d.Spec.Replicas)
	}
}

type unexpected struct {
	status int
	body   string
}

func (u *unexpected) Error() string { return http.StatusText(u.status) + ": " + u.body }
