// Package testenv starts a real kube-apiserver and etcd (controller-runtime's
// envtest) with leo's CRDs installed, for tests and for the demo.
//
// The binaries come from KUBEBUILDER_ASSETS or, when that is unset, from the
// cache that hack/kube/build.sh fills (bin/kube/<kubernetes version>). There
// is no download: `make test` builds them from the Go module proxy first.
package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

// Scheme knows the built-in kinds and leo's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(servingv1alpha1.AddToScheme(s))
	return s
}

// RepoRoot finds the root of the leo module from the working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.HasPrefix(string(b), "module github.com/leo-operator/leo\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the leo repository (no go.mod of github.com/leo-operator/leo above the working directory)")
		}
		dir = parent
	}
}

// KubeVersion is the Kubernetes version hack/kube/go.mod builds.
func KubeVersion(root string) (string, error) {
	f, err := os.Open(filepath.Join(root, "hack", "kube", "go.mod"))
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[0] == "require" && fields[1] == "k8s.io/kubernetes" {
			return fields[2], nil
		}
	}
	return "", errors.New("hack/kube/go.mod has no `require k8s.io/kubernetes vX.Y.Z` line")
}

// BinaryDir is where kube-apiserver and etcd are: KUBEBUILDER_ASSETS, or the
// cache of hack/kube/build.sh. It fails with what to do when they are not
// there.
func BinaryDir(root string) (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		v, err := KubeVersion(root)
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin", "kube", v)
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("no %s in %s: run `make test` (or hack/kube/build.sh), which builds it from the Go module proxy", b, dir)
		}
	}
	return dir, nil
}

// New returns an envtest environment with leo's CRDs and the locally built
// binaries. Start it with Start and stop it with Stop.
func New() (*envtest.Environment, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	bin, err := BinaryDir(root)
	if err != nil {
		return nil, err
	}
	return &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: bin,
		Scheme:                Scheme(),
	}, nil
}

// StartForTest starts a control plane with leo's CRDs for one test, stops
// it when the test ends, and returns it with an admin client.
func StartForTest(t testing.TB) (*envtest.Environment, *rest.Config, client.Client) {
	t.Helper()
	env, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() }) // also after a failed start: it may have left etcd running
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd: %v", err)
	}
	k8s, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return env, cfg, k8s
}

// Eventually polls check until it returns nil, failing the test with the
// last error when timeout has passed.
func Eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	EventuallyEvery(t, timeout, 50*time.Millisecond, what, check)
}

// EventuallyEvery is Eventually checking every interval (for checks that
// load the API server they observe, such as listing hundreds of objects).
func EventuallyEvery(t testing.TB, timeout, interval time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(interval)
	}
}
