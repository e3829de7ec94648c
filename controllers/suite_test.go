package controllers_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/leo-operator/leo/controllers"
	"github.com/leo-operator/leo/internal/testenv"
)

// k8s talks to a real kube-apiserver on which the three reconcilers run in a
// controller-runtime manager, as in production.
var k8s client.Client

func TestMain(m *testing.M) {
	os.Exit(runWithManager(m))
}

func runWithManager(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true)))
	env, err := testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller tests need a kube-apiserver:", err)
		return 1
	}
	defer func() { _ = env.Stop() }() // also after a failed start: it may have left etcd running
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting kube-apiserver and etcd:", err)
		return 1
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := controllers.SetupAll(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	// The tests read from the API server, not the manager's cache, so they
	// never judge the reconcilers on a stale copy.
	k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	syncCtx, cancelSync := context.WithTimeout(ctx, time.Minute)
	defer cancelSync()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		fmt.Fprintln(os.Stderr, "manager cache did not sync within a minute")
		return 1
	}
	return m.Run()
}

// eventually gives the reconcilers 20 seconds to reach a state.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, what, check)
}
