package main

// This test builds the manager binary and runs it against a real
// kube-apiserver, as a Deployment would: leader election through a Lease,
// health and readiness probes, the metrics endpoint, and a clean shutdown
// that gives the Lease up.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/internal/testenv"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

func get(addr, path string) (int, string, error) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitFor gives the manager process a minute to reach a state.
func waitFor(t *testing.T, what string, check func() error) {
	t.Helper()
	testenv.Eventually(t, time.Minute, what, check)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// managerBinary builds the manager once for all tests of this package.
func managerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "leo-manager-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "manager")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startManager runs the manager binary against env as its ServiceAccount,
// with only the RBAC of config/rbac, so a missing permission fails the test.
// It returns the process, a channel that receives its exit, and its logs
// (to be read only once it has exited).
func startManager(t *testing.T, env *envtest.Environment, k8s client.Client, args ...string) (*exec.Cmd, <-chan error, *strings.Builder) {
	t.Helper()
	installRBAC(t, k8s)
	sa, err := env.AddUser(envtest.User{
		Name:   "system:serviceaccount:leo-system:leo-manager",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:leo-system", "system:authenticated"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := sa.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfigPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	// One writer for both streams: exec then writes from one goroutine.
	logs := &strings.Builder{}
	cmd := exec.Command(managerBinary(t), append([]string{"--kubeconfig", kubeconfigPath}, args...)...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(done)
		exited <- err
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("manager logs:\n%s", logs.String())
		}
	})
	return cmd, exited, logs
}

func TestManagerBinary(t *testing.T) {
	env, _, k8s := testenv.StartForTest(t)
	metrics, probes := freePort(t), freePort(t)
	cmd, exited, logs := startManager(t, env, k8s,
		"--metrics-bind-address", metrics,
		"--health-probe-bind-address", probes,
		"--leader-elect", "--leader-election-namespace", "leo-system")

	for _, path := range []string{"/healthz", "/readyz"} {
		waitFor(t, path, func() error {
			code, body, err := get(probes, path)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("%s: %d %s", path, code, body)
			}
			return nil
		})
	}

	var lease coordinationv1.Lease
	leaseKey := client.ObjectKey{Namespace: "leo-system", Name: "leo-manager.serving.leo.dev"}
	waitFor(t, "leader election Lease", func() error {
		if err := k8s.Get(context.Background(), leaseKey, &lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("lease has no holder")
		}
		return nil
	})

	// The controllers run once elected: their metrics appear.
	waitFor(t, "controller metrics", func() error {
		code, body, err := get(metrics, "/metrics")
		if err != nil {
			return err
		}
		for _, c := range []string{"llamamodel", "onlineendpoint", "batchdeployment"} {
			if code != http.StatusOK || !strings.Contains(body, `controller_runtime_active_workers{controller="`+c+`"}`) {
				return fmt.Errorf("no worker metric for controller %s (HTTP %d)", c, code)
			}
		}
		return nil
	})

	// Its reconcilers may read the kinds and write their status.
	m := &servingv1alpha1.LlamaModel{
		ObjectMeta: metav1.ObjectMeta{Name: "rbac-check", Namespace: "default"},
		Spec:       servingv1alpha1.LlamaModelSpec{Source: servingv1alpha1.ModelSource{URI: "hf://a/b"}},
	}
	if err := k8s.Create(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "status written by the manager", func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(m), m); err != nil {
			return err
		}
		if m.Status.ObservedGeneration != m.Generation {
			return fmt.Errorf("status not written: %+v", m.Status)
		}
		return nil
	})

	// With only its generated RBAC it makes what the kinds need: the
	// model's claim and Job, an endpoint's keys Secret and Services, and
	// events about them.
	waitFor(t, "the model's claim and prepare Job", func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "rbac-check-cache"}, &corev1.PersistentVolumeClaim{}); err != nil {
			return err
		}
		var jobs batchv1.JobList
		if err := k8s.List(context.Background(), &jobs, client.InNamespace("default")); err != nil {
			return err
		}
		if len(jobs.Items) != 1 {
			return fmt.Errorf("%d Jobs", len(jobs.Items))
		}
		return nil
	})
	e := &servingv1alpha1.OnlineEndpoint{
		ObjectMeta: metav1.ObjectMeta{Name: "rbac-check", Namespace: "default"},
		Spec:       servingv1alpha1.OnlineEndpointSpec{Deployments: []servingv1alpha1.EndpointDeployment{{Name: "blue", Model: "rbac-check"}}},
	}
	if err := k8s.Create(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the endpoint's keys, Services and events", func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "rbac-check-keys"}, &corev1.Secret{}); err != nil {
			return err
		}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "rbac-check"}, &corev1.Service{}); err != nil {
			return err
		}
		var events eventsv1.EventList
		if err := k8s.List(context.Background(), &events, client.InNamespace("default")); err != nil {
			return err
		}
		if len(events.Items) == 0 {
			return fmt.Errorf("no events")
		}
		return nil
	})

	// SIGTERM: a clean exit that releases the Lease for the next leader.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("manager exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("manager still running 30s after SIGTERM")
	}
	// No watch or write of any part (the autoscaler's reads of pods, say)
	// was refused for want of RBAC.
	if strings.Contains(logs.String(), "forbidden") {
		t.Errorf("the manager was refused something with its RBAC:\n%s", logs.String())
	}
	if err := k8s.Get(context.Background(), leaseKey, &lease); err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" {
		t.Errorf("lease still held by %q after shutdown", *lease.Spec.HolderIdentity)
	}
}

// installRBAC applies config/rbac and the leo-system namespace, as a user
// installing leo would.
func installRBAC(t *testing.T, k8s client.Client) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "config", "rbac", "*.yaml"))
	files = append(files, filepath.Join(root, "config", "manager", "manager.yaml"))
	objs, err := testenv.ReadObjects(files...)
	if err != nil {
		t.Fatal(err)
	}
	// The namespace first; kustomization files are not objects.
	sort.SliceStable(objs, func(i, j int) bool { return objs[i].GetKind() == "Namespace" && objs[j].GetKind() != "Namespace" })
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := k8s.Create(context.Background(), o); err != nil {
				t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	}
}

func TestManagerWithoutAPIServer(t *testing.T) {
	dir := t.TempDir()
	bin := managerBinary(t)
	cmd := exec.Command(bin, "--metrics-bind-address", "0", "--health-probe-bind-address", "0")
	cmd.Env = []string{"HOME=" + dir, "KUBECONFIG=" + filepath.Join(dir, "missing")}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("manager started with no API server:\n%s", out)
	}
	if !strings.Contains(string(out), "no Kubernetes API server to talk to") {
		t.Errorf("unclear error without an API server:\n%s", out)
	}
}

// TestSecureMetrics checks --metrics-secure: HTTPS, and only callers the API
// server authenticates and allows to get /metrics may scrape.
func TestSecureMetrics(t *testing.T) {
	env, cfg, k8s := testenv.StartForTest(t)
	metrics := freePort(t)
	_, _, _ = startManager(t, env, k8s, "--metrics-secure", "--metrics-bind-address", metrics,
		"--health-probe-bind-address", "0", "--leader-elect=false")

	ctx := context.Background()
	for _, o := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "prometheus", Namespace: "default"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nosy", Namespace: "default"}},
		&rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "leo-metrics-reader"},
			Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
		},
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "prometheus-reads-leo-metrics"},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "leo-metrics-reader"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: "default"}},
		},
	} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	token := func(sa string) string {
		tr, err := clientset.CoreV1().ServiceAccounts("default").CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token for %s: %v", sa, err)
		}
		return tr.Status.Token
	}
	// The certificate is self-signed: this test checks who may scrape,
	// not the certificate chain.
	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec
	scrape := func(bearer string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+metrics+"/metrics", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := httpsClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	allowed := token("prometheus")
	waitFor(t, "metrics over HTTPS", func() error {
		code, body, err := scrape(allowed)
		if err != nil {
			return err
		}
		if code != http.StatusOK || !strings.Contains(body, "controller_runtime_") {
			return fmt.Errorf("HTTP %d: %.200s", code, body)
		}
		return nil
	})
	// want 0: refused, with whatever code. controller-runtime answers a
	// token the API server cannot parse with 500 "Authentication failed"
	// rather than 401; either way nothing is served.
	for _, c := range []struct {
		who   string
		token string
		want  int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a forged token", "not-a-token", 0},
		{"a ServiceAccount without RBAC", token("nosy"), http.StatusForbidden},
	} {
		code, body, err := scrape(c.token)
		if err != nil {
			t.Fatal(err)
		}
		if code < 400 || strings.Contains(body, "controller_runtime_") || (c.want != 0 && code != c.want) {
			t.Errorf("scrape with %s: HTTP %d %.100q, want refused (%d)", c.who, code, body, c.want)
		}
	}
}
