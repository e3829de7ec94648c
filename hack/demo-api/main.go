// Command demo-api is leo's demo for a machine without root or a node: it
// starts a real kube-apiserver and etcd (built by hack/kube/build.sh),
// installs leo's CRDs, runs the manager's controllers against them, applies
// the samples from config/samples, shows what the API server and the
// controllers made of them, and shows an invalid object being refused.
//
//	go run ./hack/demo-api       (make demo-api)
//	go run ./hack/demo-api -keep keep the control plane up; prints a kubeconfig
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers"
	"github.com/leo-operator/leo/controllers/desired"
	"github.com/leo-operator/leo/internal/testenv"
)

func main() {
	keep := flag.Bool("keep", false, "keep the control plane and the controllers running until Ctrl-C")
	flag.Parse()
	if err := run(*keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(keep bool) error {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	env, err := testenv.New()
	if err != nil {
		return err
	}
	step("starting kube-apiserver and etcd from %s", env.BinaryAssetsDirectory)
	defer func() { _ = env.Stop() }() // also after a failed start: it may have left etcd running
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	step("installed the CRDs: llamamodels, onlineendpoints, batchdeployments (serving.leo.dev/v1alpha1)")

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Cache:                  controllers.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return err
	}
	if err := controllers.SetupAll(mgr, controllers.Options{Config: desired.Config{RuntimeImage: "leo-runtime:demo"}}); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(ctx) }()
	// Stop the controllers before the control plane (deferred earlier, so run later).
	defer func() {
		cancel()
		if err := <-mgrDone; err != nil {
			fmt.Fprintln(os.Stderr, "demo: controllers:", err)
		}
	}()
	step("started the LlamaModel, OnlineEndpoint and BatchDeployment controllers")

	k8s, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return err
	}
	ns := "demo"
	nsObj := &unstructured.Unstructured{}
	nsObj.SetAPIVersion("v1")
	nsObj.SetKind("Namespace")
	nsObj.SetName(ns)
	if err := k8s.Create(ctx, nsObj); err != nil {
		return err
	}
	objs, err := readSamples(filepath.Join(root, "config", "samples"))
	if err != nil {
		return err
	}
	for _, o := range objs {
		o.SetNamespace(ns)
		if err := k8s.Create(ctx, o); err != nil {
			return fmt.Errorf("applying sample %s %s: %w", o.GetKind(), o.GetName(), err)
		}
		step("applied %s/%s", strings.ToLower(o.GetKind()), o.GetName())
	}

	if err := waitObserved(ctx, k8s, ns, len(objs)); err != nil {
		return err
	}
	if err := printStatus(ctx, k8s, ns); err != nil {
		return err
	}
	step("what the operator made so far (the endpoints and the batch run wait for their models):")
	if err := printMade(ctx, k8s, ns); err != nil {
		return err
	}
	n, err := finishPrepareJobs(ctx, k8s, ns)
	if err != nil {
		return err
	}
	step("playing the node (there is none here): finished %d prepare Jobs as leo-runtime prepare would, with a result", n)
	if err := waitModelsReady(ctx, k8s, ns); err != nil {
		return err
	}
	time.Sleep(time.Second) // the endpoints and the batch run catch up
	if err := printStatus(ctx, k8s, ns); err != nil {
		return err
	}
	step("what the operator made for the Ready models:")
	if err := printMade(ctx, k8s, ns); err != nil {
		return err
	}

	bad := `
apiVersion: serving.leo.dev/v1alpha1
kind: OnlineEndpoint
metadata: {name: bad-split, namespace: demo}
spec:
  deployments: [{name: blue, model: llama-2-7b-q4}, {name: green, model: llama-2-7b-q4}]
  traffic: {blue: 90, green: 20}
`
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(bad), &u.Object); err != nil {
		return err
	}
	err = k8s.Create(ctx, u)
	if err == nil {
		return errors.New("the API server accepted traffic adding up to 110%")
	}
	step("an endpoint with traffic {blue: 90, green: 20} is refused:\n    %v", err)

	if !keep {
		fmt.Println("\nThis was the API and the operator alone, with no node to run the pods on.")
		fmt.Println("`make demo` (as root) runs it all on a local single-node cluster: the runtime's pods, the gateway, a batch run.")
		return nil
	}
	admin, err := env.AddUser(envtest.User{Name: "demo-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	path := filepath.Join(root, "bin", "demo.kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		return err
	}
	step("control plane up; use it with KUBECONFIG=%s (Ctrl-C to stop)", path)
	<-ctx.Done()
	return nil
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func readSamples(dir string) ([]*unstructured.Unstructured, error) {
	files, err := filepath.Glob(filepath.Join(dir, "serving_*.yaml"))
	if err != nil {
		return nil, err
	}
	objs, err := testenv.ReadObjects(files...)
	if err != nil {
		return nil, err
	}
	// Models first, as a user would apply them.
	var models, others []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() == "LlamaModel" {
			models = append(models, u)
		} else {
			others = append(others, u)
		}
	}
	return append(models, others...), nil
}

// row is one line of the status table.
type row struct {
	kind, name, phase string
	observed, gen     int64
	ready             *metav1.Condition
}

func rows(ctx context.Context, k8s client.Client, ns string) ([]row, error) {
	var out []row
	var ms servingv1alpha1.LlamaModelList
	if err := k8s.List(ctx, &ms, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	for _, m := range ms.Items {
		out = append(out, row{"LlamaModel", m.Name, string(m.Status.Phase), m.Status.ObservedGeneration, m.Generation,
			meta.FindStatusCondition(m.Status.Conditions, servingv1alpha1.ConditionReady)})
	}
	var es servingv1alpha1.OnlineEndpointList
	if err := k8s.List(ctx, &es, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	for _, e := range es.Items {
		out = append(out, row{"OnlineEndpoint", e.Name, "-", e.Status.ObservedGeneration, e.Generation,
			meta.FindStatusCondition(e.Status.Conditions, servingv1alpha1.ConditionReady)})
	}
	var bs servingv1alpha1.BatchDeploymentList
	if err := k8s.List(ctx, &bs, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	for _, b := range bs.Items {
		out = append(out, row{"BatchDeployment", b.Name, string(b.Status.Phase), b.Status.ObservedGeneration, b.Generation,
			meta.FindStatusCondition(b.Status.Conditions, servingv1alpha1.ConditionReady)})
	}
	return out, nil
}

func waitObserved(ctx context.Context, k8s client.Client, ns string, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs, err := rows(ctx, k8s, ns)
		if err != nil {
			return err
		}
		done := len(rs) == want
		for _, r := range rs {
			if r.ready == nil || r.observed != r.gen {
				done = false
			}
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the controllers did not report on all %d objects within 30s", want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func printStatus(ctx context.Context, k8s client.Client, ns string) error {
	rs, err := rows(ctx, k8s, ns)
	if err != nil {
		return err
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "KIND\tNAME\tPHASE\tREADY\tREASON\tMESSAGE")
	for _, r := range rs {
		_, _ = fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.kind, r.name, r.phase, r.ready.Status, r.ready.Reason, r.ready.Message)
	}
	_ = w.Flush()
	fmt.Println()
	return nil
}
