//go:build e2e

// Package e2e runs leo on a real single-node cluster (hack/cluster: the
// Kubernetes components, containerd and runc, leo's images imported): the
// Helm chart installed, a model prepared by a real Job from a volume, an
// endpoint's real runtime pods answering through the real gateway.
//
//	make test-e2e        (root: it brings the cluster up first)
package e2e

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/internal/testenv"
)

const (
	ns        = "e2e"
	class     = "leo-e2e"
	helmNS    = "leo-system"
	apiPrefix = "/endpoints/" + ns
)

// cluster is the cluster under test.
type cluster struct {
	t       *testing.T
	root    string
	kubecfg string
	k8s     client.Client
	volumes string // host directory of the hostPath volumes
}

func connect(t *testing.T) *cluster {
	t.Helper()
	kubecfg := os.Getenv("LEO_E2E_KUBECONFIG")
	if kubecfg == "" {
		t.Fatal("LEO_E2E_KUBECONFIG is not set: run `make test-e2e`, which brings the local cluster up and sets it")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubecfg)
	if err != nil {
		t.Fatal(err)
	}
	// The client logs through controller-runtime's logger: give it one, or
	// it prints a stack trace saying it has none.
	ctrllog.SetLogger(logr.Discard())
	k8s, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(filepath.Dir(kubecfg), "volumes")
	return &cluster{t: t, root: root, kubecfg: kubecfg, k8s: k8s, volumes: vol}
}

// run runs a command from the repository's root with the cluster's
// kubeconfig, failing the test with its output if it fails.
func (c *cluster) run(name string, args ...string) string {
	c.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = c.root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubecfg, "HELM_CACHE_HOME="+c.t.TempDir(), "HELM_CONFIG_HOME="+c.t.TempDir(), "HELM_DATA_HOME="+c.t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (c *cluster) create(objs ...client.Object) {
	c.t.Helper()
	for _, o := range objs {
		if err := c.k8s.Create(context.Background(), o); err != nil && !apierrors.IsAlreadyExists(err) {
			c.t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// eventually polls check every half second until it returns nil.
func (c *cluster) eventually(timeout time.Duration, what string, check func() error) time.Duration {
	c.t.Helper()
	start := time.Now()
	testenv.EventuallyEvery(c.t, timeout, 500*time.Millisecond, what, check)
	return time.Since(start)
}

// imageTag is the content tag of a local image, as hack/images wrote it
// for cluster-up.
func (c *cluster) imageTag(name string) string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(c.kubecfg), "images", name+".tag"))
	if err != nil {
		c.t.Fatalf("%v: run `make test-e2e`, whose cluster-up builds the images", err)
	}
	return strings.TrimSpace(string(b))
}

// reset removes what an earlier run left: the test namespace, its volumes
// and their directories.
func (c *cluster) reset() {
	ctx := context.Background()
	_ = c.k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	c.eventually(3*time.Minute, "namespace "+ns+" gone", func() error {
		err := c.k8s.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		}
		return errors.New("still there")
	})
	for _, n := range []string{"e2e-weights", "e2e-cache", "e2e-batch"} {
		_ = c.k8s.Delete(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	c.eventually(time.Minute, "the test's PersistentVolumes gone", func() error {
		var pvs corev1.PersistentVolumeList
		if err := c.k8s.List(ctx, &pvs); err != nil {
			return err
		}
		for _, pv := range pvs.Items {
			if strings.HasPrefix(pv.Name, "e2e-") {
				return fmt.Errorf("%s still there", pv.Name)
			}
		}
		return nil
	})
	if err := os.RemoveAll(c.volumes); err != nil {
		c.t.Fatal(err)
	}
}

// claimOf is a claim in the test namespace bound to pv, for all of it.
func claimOf(name string, pv *corev1.PersistentVolume) *corev1.PersistentVolumeClaim {
	class := pv.Spec.StorageClassName
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &class, VolumeName: pv.Name,
			Resources: corev1.VolumeResourceRequirements{Requests: pv.Spec.Capacity},
		},
	}
}

// hostPathVolume is a PersistentVolume of class leo-e2e on a host
// directory anyone may write (leo's pods run as a non-root user, and
// hostPath volumes get no fsGroup).
func (c *cluster) hostPathVolume(name, size string) *corev1.PersistentVolume {
	dir := filepath.Join(c.volumes, name)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		c.t.Fatal(err)
	}
	hostPath := corev1.HostPathDirectoryOrCreate
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce, corev1.ReadOnlyMany},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostPath}},
		},
	}
}

func TestEndToEnd(t *testing.T) {
	c := connect(t)
	ctx := context.Background()

	// The chart, with the images built and imported by cluster-up.
	helm := os.Getenv("HELM")
	if helm == "" {
		t.Fatal("HELM is not set: run `make test-e2e`")
	}
	start := time.Now()
	// Images by their content tags (hack/images), so that a rebuilt image
	// rolls out.
	c.run(helm, "upgrade", "--install", "leo", "charts/leo", "--namespace", helmNS, "--create-namespace", "--wait", "--timeout", "3m",
		"--set", "manager.image.repository=leo.local/leo-manager,manager.image.tag="+c.imageTag("leo-manager")+",manager.image.pullPolicy=Never",
		"--set", "runtime.image.repository=leo.local/leo-runtime,runtime.image.tag="+c.imageTag("leo-runtime")+",runtime.image.pullPolicy=Never",
		"--set", "gateway.image.repository=leo.local/leo-gateway,gateway.image.tag="+c.imageTag("leo-gateway")+",gateway.image.pullPolicy=Never,gateway.replicas=1")
	t.Logf("chart installed and its pods ready in %v", time.Since(start).Round(time.Second))

	c.reset()
	c.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})

	// Weights on a volume: a Job writes a generated Llama-shaped model
	// (random weights, the real Llama 2 vocabulary) in F16.
	weightsPV := c.hostPathVolume("e2e-weights", "1Gi")
	cachePV := c.hostPathVolume("e2e-cache", "2Gi")
	storageClass := class
	weights := claimOf("weights", weightsPV)
	gen := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gen-weights"},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: new(bool),
			Volumes: []corev1.Volume{{Name: "w", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "weights"}}}},
			Containers: []corev1.Container{{Name: "gen", Image: "leo.local/leo-runtime:" + c.imageTag("leo-runtime"), ImagePullPolicy: corev1.PullNever,
				Args:         []string{"gen-model", "--shape", "test-gqa", "--type", "f16", "--seed", "1", "-o", "/w/model.gguf"},
				VolumeMounts: []corev1.VolumeMount{{Name: "w", MountPath: "/w"}}}},
		}}},
	}
	c.create(weightsPV, cachePV, weights, gen)
	took := c.eventually(3*time.Minute, "the weights Job to succeed", func() error {
		var j batchv1.Job
		if err := c.k8s.Get(ctx, client.ObjectKeyFromObject(gen), &j); err != nil {
			return err
		}
		if j.Status.Succeeded < 1 {
			return fmt.Errorf("succeeded %d, failed %d", j.Status.Succeeded, j.Status.Failed)
		}
		return nil
	})
	t.Logf("weights written by a Job in %v", took.Round(time.Second))

	// A LlamaModel from the volume, quantized to q8_0 by the operator's
	// prepare Job into a cache claim it makes (bound to the cache volume).
	size := resource.MustParse("2Gi")
	model := &servingv1alpha1.LlamaModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tiny"},
		Spec: servingv1alpha1.LlamaModelSpec{
			Source:       servingv1alpha1.ModelSource{URI: "pvc://weights/model.gguf"},
			Format:       servingv1alpha1.ModelFormatGGUF,
			Quantization: servingv1alpha1.QuantizationQ8_0,
			Storage:      servingv1alpha1.ModelStorage{Size: &size, StorageClassName: &storageClass},
		},
	}
	c.create(model)
	took = c.eventually(5*time.Minute, "LlamaModel tiny Ready", func() error {
		if err := c.k8s.Get(ctx, client.ObjectKeyFromObject(model), model); err != nil {
			return err
		}
		if model.Status.Phase != servingv1alpha1.ModelPhaseReady {
			return fmt.Errorf("phase %s: %v", model.Status.Phase, readyMessage(model.Status.Conditions))
		}
		return nil
	})
	a := model.Status.Artifact
	t.Logf("LlamaModel Ready in %v: artifact %s on %s, %d bytes, sha256 %s", took.Round(time.Second), a.Path, a.ClaimName, a.SizeBytes, a.SHA256)
	if !strings.HasSuffix(a.Path, "/q8_0/model.gguf") || a.SizeBytes == 0 || len(a.SHA256) != 64 {
		t.Errorf("artifact: %+v", a)
	}

	// An endpoint with two deployments of it, 90/10, key auth.
	one := int32(1)
	dep := func(name string) servingv1alpha1.EndpointDeployment {
		return servingv1alpha1.EndpointDeployment{Name: name, Model: "tiny", InstanceCount: &one,
			RequestSettings: servingv1alpha1.RequestSettings{RequestTimeoutMs: 30000, MaxConcurrentRequestsPerInstance: 4}}
	}
	oe := &servingv1alpha1.OnlineEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat"},
		Spec: servingv1alpha1.OnlineEndpointSpec{
			AuthMode:    servingv1alpha1.AuthModeKey,
			Deployments: []servingv1alpha1.EndpointDeployment{dep("blue"), dep("green")},
			Traffic:     map[string]int32{"blue": 90, "green": 10},
		},
	}
	c.create(oe)
	took = c.eventually(3*time.Minute, "OnlineEndpoint chat Ready", func() error {
		if err := c.k8s.Get(ctx, client.ObjectKeyFromObject(oe), oe); err != nil {
			return err
		}
		if r := meta.FindStatusCondition(oe.Status.Conditions, servingv1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionTrue {
			return fmt.Errorf("not Ready: %v", readyMessage(oe.Status.Conditions))
		}
		return nil
	})
	t.Logf("OnlineEndpoint (model cached) Ready in %v after it was applied; scoring URI %s", took.Round(time.Second), oe.Status.ScoringURI)

	// The model card's sample request through the gateway, with the key.
	var keys corev1.Secret
	if err := c.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: oe.Status.KeysSecretName}, &keys); err != nil {
		t.Fatal(err)
	}
	gw := c.gatewayURL()
	sample := `{"input_data": {"input_string": ["I believe the meaning of life is"], "parameters": {"top_p": 0.9, "temperature": 0.6, "max_new_tokens": 16, "do_sample": true}}}`
	code, body, h := post(t, gw+apiPrefix+"/chat/score", sample, "Bearer "+string(keys.Data["primaryKey"]))
	if code != http.StatusOK || !strings.HasPrefix(body, `[{"0":`) {
		t.Fatalf("the sample request through the gateway: %d %s", code, body)
	}
	t.Logf("the sample request through the gateway (%s answered): %s", h.Get("azureml-model-deployment"), strings.TrimSpace(body))
	if code, body, _ := post(t, gw+apiPrefix+"/chat/score", sample, ""); code != http.StatusUnauthorized {
		t.Errorf("without the key: %d %s", code, body)
	}

	key := "Bearer " + string(keys.Data["primaryKey"])
	c.podDeletedUnderLoad(gw, key)
	c.scaleFromZero(gw, key)
	c.batch()

	// kubectl's columns.
	t.Logf("kubectl get lm,oe,bd:\n%s", c.kubectl("get", "lm,oe,bd", "-n", ns))
}

// podDeletedUnderLoad deletes blue's only pod while requests stream in:
// its requests in flight finish (the pod drains), new ones wait for the
// replacement (the gateway holds them), none fails.
func (c *cluster) podDeletedUnderLoad(gw, key string) {
	t := c.t
	ctx := context.Background()
	var pods corev1.PodList
	if err := c.k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"serving.leo.dev/deployment": "blue"}); err != nil || len(pods.Items) != 1 {
		t.Fatalf("blue's pods: %v (%d)", err, len(pods.Items))
	}
	victim := pods.Items[0]
	body := `{"input_data": {"input_string": ["Once upon a time"], "parameters": {"max_new_tokens": 32}}}`
	type result struct {
		code int
		body string
	}
	results := make(chan result, 10000)
	stop := make(chan struct{})
	done := make(chan struct{})
	const clients = 4
	for range clients {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodPost, gw+apiPrefix+"/chat/score", strings.NewReader(body))
				req.Header.Set("Authorization", key)
				req.Header.Set("azureml-model-deployment", "blue")
				resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
				if err != nil {
					results <- result{0, err.Error()}
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				results <- result{resp.StatusCode, string(b)}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	deleted := time.Now()
	if err := c.k8s.Delete(ctx, &victim); err != nil {
		t.Fatal(err)
	}
	replaced := c.eventually(2*time.Minute, "a new ready pod for blue", func() error {
		var now corev1.PodList
		if err := c.k8s.List(ctx, &now, client.InNamespace(ns), client.MatchingLabels{"serving.leo.dev/deployment": "blue"}); err != nil {
			return err
		}
		for _, p := range now.Items {
			if p.UID != victim.UID && p.DeletionTimestamp == nil && podReady(&p) {
				return nil
			}
		}
		return fmt.Errorf("%d pods, none new and ready", len(now.Items))
	})
	time.Sleep(3 * time.Second) // requests on the new pod too
	close(stop)
	for range clients {
		<-done
	}
	close(results)
	n, failed := 0, 0
	for r := range results {
		n++
		if r.code != http.StatusOK {
			failed++
			if failed <= 5 {
				t.Errorf("a request while blue's pod was replaced: %d %s", r.code, r.body)
			}
		}
	}
	t.Logf("blue's pod deleted under load (%d clients): replaced and ready %v later; %d requests, %d failed (%v after the deletion the load stopped)",
		clients, replaced.Round(time.Millisecond), n, failed, time.Since(deleted).Round(time.Second))
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// scaleFromZero adds a deployment with minInstances 0 (no pod), sends it
// a request (pinned), which wakes it; then waits for it to go back to zero
// when idle and asks again.
func (c *cluster) scaleFromZero(gw, key string) {
	t := c.t
	ctx := context.Background()
	var oe servingv1alpha1.OnlineEndpoint
	if err := c.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "chat"}, &oe); err != nil {
		t.Fatal(err)
	}
	zero, one := int32(0), int32(1)
	oe.Spec.Deployments = append(oe.Spec.Deployments, servingv1alpha1.EndpointDeployment{Name: "idle", Model: "tiny",
		ScaleSettings: servingv1alpha1.ScaleSettings{Type: servingv1alpha1.ScaleTypeTargetUtilization, MinInstances: &zero, MaxInstances: &one,
			ScaleDownDelay: "0s", ScaleToZeroIdleTime: "30s"},
		// A woken pod serves once its readiness probe passes: Azure's
		// default (after 10 s, every 10 s) would add up to 20 s to a wake.
		ReadinessProbe:  &servingv1alpha1.ProbeSettings{InitialDelaySeconds: &zero, PeriodSeconds: 1},
		RequestSettings: servingv1alpha1.RequestSettings{RequestTimeoutMs: 30000, MaxConcurrentRequestsPerInstance: 4}})
	if err := c.k8s.Update(ctx, &oe); err != nil {
		t.Fatal(err)
	}
	replicas := func() (int32, error) {
		var d appsv1.Deployment
		if err := c.k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "chat-idle"}, &d); err != nil {
			return -1, err
		}
		return *d.Spec.Replicas, nil
	}
	c.eventually(time.Minute, "Deployment chat-idle at 0 replicas", func() error {
		if r, err := replicas(); err != nil || r != 0 {
			return errors.Join(fmt.Errorf("replicas %d", r), err)
		}
		return nil
	})
	body := `{"input_data": {"input_string": ["Once upon a time"], "parameters": {"max_new_tokens": 8}}}`
	ask := func(what string) {
		// The gateway learns of the new deployment from its own watch, a
		// moment after the operator made the Deployment: until then it
		// answers 404 no_deployment (and wakes nothing), so the clock
		// starts at the request it takes.
		var start time.Time
		var resp *http.Response
		var b []byte
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			start = time.Now()
			req, _ := http.NewRequest(http.MethodPost, gw+apiPrefix+"/chat/score", strings.NewReader(body))
			req.Header.Set("Authorization", key)
			req.Header.Set("azureml-model-deployment", "idle")
			var err error
			if resp, err = (&http.Client{Timeout: 5 * time.Minute}).Do(req); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			b, _ = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), `"no_deployment"`) || time.Now().After(deadline) {
				break
			}
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("azureml-model-deployment") != "idle" {
			t.Fatalf("%s: %d %s", what, resp.StatusCode, b)
		}
		t.Logf("%s: answered %v after it was sent (wake, pod start, model load, answer)", what, time.Since(start).Round(time.Millisecond))
	}
	ask("the first request at zero replicas")
	took := c.eventually(3*time.Minute, "chat-idle back to 0 replicas when idle, its pod gone", func() error {
		if r, err := replicas(); err != nil || r != 0 {
			return errors.Join(fmt.Errorf("replicas %d", r), err)
		}
		var pods corev1.PodList
		if err := c.k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"serving.leo.dev/deployment": "idle"}); err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d pods left", len(pods.Items))
		}
		return nil
	})
	t.Logf("idle: back to zero %v later (scaleToZeroIdleTime 30s)", took.Round(time.Second))
	ask("the next request, at zero again")
}

// batch scores a folder of CSV files on a volume and checks predictions.csv.
func (c *cluster) batch() {
	t := c.t
	ctx := context.Background()
	pv := c.hostPathVolume("e2e-batch", "1Gi")
	in := filepath.Join(c.volumes, "e2e-batch", "in")
	if err := os.MkdirAll(in, 0o777); err != nil {
		t.Fatal(err)
	}
	rows := 0
	for f := range 3 {
		var b strings.Builder
		b.WriteString("id,input_string\n")
		for r := range 10 + f {
			fmt.Fprintf(&b, "%d,\"Story %d, part %d: once upon a time\"\n", r, f, r)
			rows++
		}
		if err := os.WriteFile(filepath.Join(in, fmt.Sprintf("part-%d.csv", f)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{in, filepath.Join(c.volumes, "e2e-batch", "out")} {
		// Writable by the workers' non-root user (no umask, no fsGroup on hostPath).
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	claim := claimOf("batch-data", pv)
	bd := &servingv1alpha1.BatchDeployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "stories"},
		Spec: servingv1alpha1.BatchDeploymentSpec{
			Model:         "tiny",
			Input:         servingv1alpha1.BatchInput{URI: "pvc://batch-data/in", Type: "uri_folder", Format: "csv"},
			Output:        servingv1alpha1.BatchOutput{URI: "pvc://batch-data/out"},
			InstanceCount: 2,
			Parameters:    servingv1alpha1.GenerationParameters{MaxNewTokens: 8},
		},
	}
	c.create(pv, claim, bd)
	took := c.eventually(5*time.Minute, "BatchDeployment stories Succeeded", func() error {
		if err := c.k8s.Get(ctx, client.ObjectKeyFromObject(bd), bd); err != nil {
			return err
		}
		if bd.Status.Phase != servingv1alpha1.BatchPhaseSucceeded {
			return fmt.Errorf("phase %q: %v", bd.Status.Phase, readyMessage(bd.Status.Conditions))
		}
		return nil
	})
	out, err := os.ReadFile(filepath.Join(c.volumes, "e2e-batch", "out", "predictions.csv"))
	if err != nil {
		t.Fatal(err)
	}
	// Rows row_number_per_file,prediction,batch_input_file_name, quoted
	// as RFC 4180 says (a prediction may hold a newline).
	records, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil {
		t.Fatalf("predictions.csv: %v\n%s", err, out)
	}
	t.Logf("BatchDeployment over 3 CSV files (%d rows) on 2 workers Succeeded in %v; predictions.csv has %d rows", rows, took.Round(time.Second), len(records))
	if len(records) != rows {
		t.Errorf("predictions.csv has %d rows for %d input rows:\n%s", len(records), rows, out)
	}
}

// gatewayURL is the gateway Service's cluster IP (reached from this host
// through kube-proxy's rules).
func (c *cluster) gatewayURL() string {
	var svc corev1.Service
	if err := c.k8s.Get(context.Background(), client.ObjectKey{Namespace: helmNS, Name: "leo-gateway"}, &svc); err != nil {
		c.t.Fatal(err)
	}
	return "http://" + svc.Spec.ClusterIP
}

func post(t *testing.T, url, body, auth string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func readyMessage(conds []metav1.Condition) string {
	if r := meta.FindStatusCondition(conds, servingv1alpha1.ConditionReady); r != nil {
		return r.Reason + ": " + r.Message
	}
	return "no Ready condition yet"
}

// kubectl runs the cluster's kubectl (built by hack/kube with the rest).
func (c *cluster) kubectl(args ...string) string {
	c.t.Helper()
	dir, err := testenv.BinaryDir(c.root)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.run(filepath.Join(dir, "kubectl"), args...)
}
