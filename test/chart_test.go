package test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/leo-operator/leo/internal/testenv"
)

// helm is the Helm binary `make test` builds into bin/ (HELM names it).
func helm(t *testing.T, root string, args ...string) string {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		matches, _ := filepath.Glob(filepath.Join(root, "bin", "helm-*"))
		if len(matches) == 0 {
			t.Fatal("no Helm binary: run `make test`, which builds it into bin/ from the Go module proxy (or set HELM)")
		}
		bin = matches[len(matches)-1]
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

// TestHelmChart lints and renders charts/leo, installs what it renders on a
// real kube-apiserver (which validates every object), and checks that the
// manager's permissions are those of config/rbac, which the manager test
// proves sufficient.
func TestHelmChart(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	helm(t, root, "lint", "--strict", "charts/leo")
	rendered := helm(t, root, "template", "leo", "charts/leo", "--namespace", "leo-system", "--include-crds")
	manifest := filepath.Join(t.TempDir(), "leo.yaml")
	if err := os.WriteFile(manifest, []byte(rendered), 0o600); err != nil {
		t.Fatal(err)
	}
	objs, err := testenv.ReadObjects(manifest)
	if err != nil {
		t.Fatalf("helm template output: %v", err)
	}
	byKind := map[string][]*unstructured.Unstructured{}
	for _, o := range objs {
		byKind[o.GetKind()] = append(byKind[o.GetKind()], o)
	}
	// The manager's and the gateway's.
	want := map[string]int{
		"CustomResourceDefinition": 3, "ServiceAccount": 2, "ClusterRole": 2, "ClusterRoleBinding": 2,
		"Role": 1, "RoleBinding": 1, "Deployment": 2, "Service": 2,
	}
	for kind, n := range want {
		if len(byKind[kind]) != n {
			t.Errorf("chart renders %d %s, want %d", len(byKind[kind]), kind, n)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Install on a real API server. The CRDs come from config/ (testenv
	// installs them; the chart's copies are the same files, checked by
	// TestGeneratedFilesAreCurrent); everything else from Helm.
	_, cfg, k8s := testenv.StartForTest(t)
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName("leo-system")
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			continue
		}
		if err := k8s.Create(context.Background(), o); err != nil {
			t.Errorf("installing %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}

	// The ClusterRole grants what config/rbac/role.yaml grants.
	generated, err := testenv.ReadObjects(filepath.Join(root, "config", "rbac", "role.yaml"))
	if err != nil || len(generated) != 1 {
		t.Fatalf("config/rbac/role.yaml: %v", err)
	}
	if got, want := rules(t, named(t, byKind["ClusterRole"], "leo-system-leo-manager")), rules(t, generated[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("chart ClusterRole rules\n  %+v\ndiffer from config/rbac/role.yaml\n  %+v", got, want)
	}

	// Every flag the chart passes exists in the manager and the gateway.
	checkFlags(t, root, "./cmd/manager", named(t, byKind["Deployment"], "leo-manager"))
	checkFlags(t, root, "./cmd/leo-gateway", named(t, byKind["Deployment"], "leo-gateway"))

	// The gateway's ClusterRole is enough for what it does, as its
	// ServiceAccount: watch endpoints, keys, Deployments and pods, and wake
	// a deployment from zero.
	checkGatewayPermissions(t, cfg, k8s)
}

// checkFlags runs `go run pkg --help` and checks that every flag the
// Deployment's first container passes is one it knows.
func checkFlags(t *testing.T, root, pkg string, deploy *unstructured.Unstructured) {
	t.Helper()
	helpCmd := exec.Command("go", "run", pkg, "--help")
	helpCmd.Dir = root
	help, _ := helpCmd.CombinedOutput() // --help exits 0 or 2 by the flag package's version
	if !strings.Contains(string(help), "Usage of") {
		t.Fatalf("go run %s --help:\n%s", pkg, help)
	}
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if len(args) == 0 {
		t.Fatalf("%s: the container has no args", deploy.GetName())
	}
	for _, a := range args {
		flag := strings.SplitN(strings.TrimPrefix(a, "--"), "=", 2)[0]
		if !strings.Contains(string(help), "-"+flag+" ") && !strings.Contains(string(help), "-"+flag+"\n") {
			t.Errorf("chart passes --%s, which %s does not know:\n%s", flag, pkg, help)
		}
	}
}

// named is the object of that name among objs.
func named(t *testing.T, objs []*unstructured.Unstructured, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetName() == name {
			return o
		}
	}
	t.Fatalf("the chart renders no %s", name)
	return nil
}

func rules(t *testing.T, u *unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	var r rbacv1.ClusterRole
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
		t.Fatal(err)
	}
	return r.Rules
}
