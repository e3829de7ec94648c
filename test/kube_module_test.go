package test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"

	"github.com/leo-operator/leo/internal/testenv"
)

// TestKubeModuleMatchesMain checks that hack/kube/go.mod (the module that
// builds the Kubernetes binaries) selects the same version as leo's go.mod
// for every module both use. Then the packages both compile (client-go,
// apimachinery, api, grpc, protobuf: about 800 of the tests' 930
// dependencies) are compiled once, by whichever build comes first, since
// hack/kube/build.sh also uses go test's build flags. A cold CI run saves
// several minutes by it.
func TestKubeModuleMatchesMain(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	main, kube := selected(t, filepath.Join(root, "go.mod")), selected(t, filepath.Join(root, "hack", "kube", "go.mod"))
	if len(kube) < 100 {
		t.Fatalf("hack/kube/go.mod selects only %d modules: not the file this test expects", len(kube))
	}
	shared := 0
	for path, k := range kube {
		m, ok := main[path]
		if !ok {
			continue
		}
		shared++
		if m != k {
			higher := m
			if semver.Compare(k, m) > 0 {
				higher = k
			}
			t.Errorf("%s: go.mod has %s, hack/kube/go.mod %s; bring both to %s (go get %s@%s, in the module that lags)", path, m, k, higher, path, higher)
		}
	}
	if shared < 50 {
		t.Errorf("only %d modules in common: expected the Kubernetes libraries and their dependencies", shared)
	}
}

// selected returns the version a go.mod selects for each module it
// requires, a replacement's version in place of the required one.
func selected(t *testing.T, file string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f, err := modfile.Parse(file, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := map[string]string{}
	for _, r := range f.Require {
		v[r.Mod.Path] = r.Mod.Version
	}
	for _, r := range f.Replace {
		if _, ok := v[r.Old.Path]; ok && r.New.Version != "" && (r.Old.Version == "" || r.Old.Version == v[r.Old.Path]) {
			v[r.Old.Path] = r.New.Version
		}
	}
	return v
}
