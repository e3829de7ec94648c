// Package test holds repository-wide checks; the end-to-end tests against a
// real cluster join them here.
package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/leo-operator/leo/internal/testenv"
)

// TestGeneratedFilesAreCurrent runs controller-gen into a scratch directory
// and compares its output with the committed deepcopy code, CRDs, RBAC and
// the chart's copy of the CRDs. Run `make generate manifests` when it fails.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", append([]string{"tool", "controller-gen"}, args...)...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("controller-gen %v: %v\n%s", args, err, b)
		}
	}
	run("object:headerFile=hack/boilerplate.go.txt", "paths=./api/...", "output:object:dir="+filepath.Join(out, "object"))
	run("crd:allowDangerousTypes=true", "rbac:roleName=leo-manager", "paths=./api/...", "paths=./controllers/...", "paths=./cmd/...",
		"output:crd:artifacts:config="+filepath.Join(out, "crd"), "output:rbac:artifacts:config="+filepath.Join(out, "rbac"))

	compare := func(generated, committed string) {
		t.Helper()
		want, err := os.ReadFile(generated)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, committed))
		if err != nil {
			t.Errorf("%s: %v (run `make generate manifests` and commit the result)", committed, err)
			return
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `make generate manifests` and commit the result", committed)
		}
	}
	compare(filepath.Join(out, "object", "zz_generated.deepcopy.go"), "api/v1alpha1/zz_generated.deepcopy.go")
	compare(filepath.Join(out, "rbac", "role.yaml"), "config/rbac/role.yaml")
	role, err := os.ReadFile(filepath.Join(out, "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(role, []byte("\nrules:\n"))
	if i < 0 {
		t.Fatal("generated role.yaml has no rules")
	}
	rules := filepath.Join(out, "manager-rules.yaml")
	if err := os.WriteFile(rules, role[i+1:], 0o644); err != nil {
		t.Fatal(err)
	}
	compare(rules, "charts/leo/files/manager-rules.yaml")
	crds, err := filepath.Glob(filepath.Join(out, "crd", "*.yaml"))
	if err != nil || len(crds) != 3 {
		t.Fatalf("controller-gen made %d CRDs, want 3 (%v)", len(crds), err)
	}
	for _, crd := range crds {
		compare(crd, filepath.Join("config", "crd", "bases", filepath.Base(crd)))
		compare(crd, filepath.Join("charts", "leo", "crds", filepath.Base(crd)))
	}
	// No CRD may linger in the committed folders after its kind is gone.
	for _, dir := range []string{"config/crd/bases", "charts/leo/crds"} {
		committed, _ := filepath.Glob(filepath.Join(root, dir, "*.yaml"))
		if len(committed) != len(crds) {
			t.Errorf("%s holds %d CRDs, controller-gen makes %d", dir, len(committed), len(crds))
		}
	}
}
