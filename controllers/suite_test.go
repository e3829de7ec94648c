package controllers_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers"
	"github.com/leo-operator/leo/controllers/desired"
	"github.com/leo-operator/leo/internal/kubelettest"
	"github.com/leo-operator/leo/internal/testenv"
)

// The tests run the three reconcilers in a controller-runtime manager
// against a real kube-apiserver and etcd, as in production. Nothing else of
// Kubernetes runs: the tests play the Job controller and the kubelet by
// creating pods and setting Job, pod and Deployment status, and a kubelet
// for tests (kubelettest) serves the pods' logs, which the operator reads
// through the API server as it does in a cluster.
var (
	// k8s talks to the API server directly, not through the manager's
	// cache, so the tests never judge the reconcilers on a stale copy.
	k8s     client.Client
	kubelet *kubelettest.Kubelet
)

const (
	nodeName     = "node-1"
	runtimeImage = "leo-runtime:test"
)

func TestMain(m *testing.M) {
	os.Exit(runWithManager(m))
}

func runWithManager(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true)))
	var err error
	kubelet, err = kubelettest.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = kubelet.Close() }()
	env, err := testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller tests need a kube-apiserver:", err)
		return 1
	}
	kubelet.ConfigureAPIServer(env)
	defer func() { _ = env.Stop() }() // also after a failed start: it may have left etcd running
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting kube-apiserver and etcd:", err)
		return 1
	}
	k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := kubelet.RegisterNode(ctx, k8s, nodeName); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Cache:                  controllers.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := controllers.SetupAll(mgr, controllers.Options{
		Config:           desired.Config{RuntimeImage: runtimeImage, ClusterDomain: "cluster.test"},
		ProgressInterval: 200 * time.Millisecond,
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
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

// namespace makes a namespace of its own for a test.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-") + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

func create(t *testing.T, o client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), o); err != nil {
		t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
	}
}

func get(o client.Object) error {
	return k8s.Get(context.Background(), client.ObjectKeyFromObject(o), o)
}

// update reads o, changes it with f and writes it back, retrying conflicts
// (the operator writes too).
func update[T client.Object](t *testing.T, o T, f func(T)) {
	t.Helper()
	eventually(t, "updating "+o.GetName(), func() error {
		if err := get(o); err != nil {
			return err
		}
		f(o)
		return k8s.Update(context.Background(), o)
	})
}

// updateStatus is update for the status subresource.
func updateStatus[T client.Object](t *testing.T, o T, f func(T)) {
	t.Helper()
	eventually(t, "updating the status of "+o.GetName(), func() error {
		if err := get(o); err != nil {
			return err
		}
		f(o)
		return k8s.Status().Update(context.Background(), o)
	})
}

// condition finds a condition by type.
func condition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

// wantCondition checks a condition's status and reason.
func wantCondition(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string) error {
	c := condition(conds, typ)
	if c == nil {
		return fmt.Errorf("no %s condition in %+v", typ, conds)
	}
	if c.Status != status || c.Reason != reason {
		return fmt.Errorf("%s condition is %s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
}

// events lists the reasons of the events about an object, in order.
func events(t *testing.T, ns, name string) []string {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

// hasEvent waits for an event with the reason about the object.
func hasEvent(t *testing.T, ns, name, reason string) {
	t.Helper()
	eventually(t, "event "+reason+" about "+name, func() error {
		for _, r := range events(t, ns, name) {
			if r == reason {
				return nil
			}
		}
		return fmt.Errorf("events about %s: %v", name, events(t, ns, name))
	})
}

// jobOf waits for the Job and returns it.
func jobOf(t *testing.T, ns, name string) *batchv1.Job {
	t.Helper()
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	eventually(t, "Job "+name, func() error { return get(job) })
	return job
}

// runPod plays the Job controller and the kubelet: it creates a running pod
// of the Job on the test node, with a log served by the test kubelet.
func runPod(t *testing.T, job *batchv1.Job, name, container, log string, labels map[string]string) *corev1.Pod {
	t.Helper()
	l := map[string]string{batchv1.JobNameLabel: job.Name, batchv1.ControllerUidLabel: string(job.UID)}
	for k, v := range labels {
		l[k] = v
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: job.Namespace, Name: name, Labels: l, Annotations: labels},
		Spec: corev1.PodSpec{
			NodeName: nodeName, RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: container, Image: runtimeImage}},
		},
	}
	create(t, pod)
	kubelet.SetLog(job.Namespace, name, container, log)
	updateStatus(t, pod, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: container, Image: runtimeImage, Ready: true, Started: ptr(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		}}
	})
	return pod
}

// endPod ends a pod's container with an exit code and a termination message.
func endPod(t *testing.T, pod *corev1.Pod, exit int32, message string) {
	t.Helper()
	updateStatus(t, pod, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodSucceeded
		if exit != 0 {
			p.Status.Phase = corev1.PodFailed
		}
		c := &p.Status.ContainerStatuses[0]
		c.Ready = false
		c.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: exit, Message: message, Reason: map[bool]string{true: "Completed", false: "Error"}[exit == 0],
			StartedAt: c.State.Running.StartedAt, FinishedAt: metav1.Now(),
		}}
	})
}

// jobStatus sets a Job's counts, with a start time as the Job controller
// does.
func jobStatus(t *testing.T, job *batchv1.Job, active, failed int32) {
	t.Helper()
	updateStatus(t, job, func(j *batchv1.Job) {
		if j.Status.StartTime == nil {
			j.Status.StartTime = ptr(metav1.Now())
		}
		j.Status.Active, j.Status.Failed = active, failed
		j.Status.Ready = ptr(active)
		j.Status.Terminating = ptr(int32(0))
		j.Status.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{}
	})
}

// jobDone finishes a Job as the Job controller does: the interim condition
// (SuccessCriteriaMet or FailureTarget), then Complete or Failed.
func jobDone(t *testing.T, job *batchv1.Job, ok bool, reason string) {
	t.Helper()
	updateStatus(t, job, func(j *batchv1.Job) {
		now := metav1.Now()
		if j.Status.StartTime == nil {
			j.Status.StartTime = &now
		}
		j.Status.Active = 0
		j.Status.Ready = ptr(int32(0))
		interim, final := batchv1.JobSuccessCriteriaMet, batchv1.JobComplete
		if !ok {
			interim, final = batchv1.JobFailureTarget, batchv1.JobFailed
		}
		j.Status.Conditions = append(j.Status.Conditions,
			batchv1.JobCondition{Type: interim, Status: corev1.ConditionTrue, Reason: reason, LastProbeTime: now, LastTransitionTime: now},
			batchv1.JobCondition{Type: final, Status: corev1.ConditionTrue, Reason: reason, LastProbeTime: now, LastTransitionTime: now})
		if ok {
			j.Status.CompletionTime = &now
			if j.Spec.Completions != nil {
				j.Status.Succeeded = *j.Spec.Completions
			} else {
				j.Status.Succeeded = 1
			}
			if j.Spec.CompletionMode != nil && *j.Spec.CompletionMode == batchv1.IndexedCompletion {
				j.Status.CompletedIndexes = indexes(j.Status.Succeeded)
			}
		}
	})
}

func indexes(n int32) string {
	if n == 1 {
		return "0"
	}
	return fmt.Sprintf("0-%d", n-1)
}

// readyModel creates a LlamaModel and plays its prepare Job to success.
func readyModel(t *testing.T, ns, name string) *servingv1alpha1.LlamaModel {
	t.Helper()
	m := &servingv1alpha1.LlamaModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: servingv1alpha1.LlamaModelSpec{
			Source:       servingv1alpha1.ModelSource{URI: "https://models.example/" + name + ".gguf"},
			Quantization: servingv1alpha1.QuantizationQ8_0,
		},
	}
	create(t, m)
	eventually(t, "the model's spec defaults", func() error { return get(m) })
	job := jobOf(t, ns, desired.PrepareJobName(desired.CacheClaimName(m), desired.ArtifactDir(m.Spec)))
	pod := runPod(t, job, job.Name+"-a", "prepare", "", nil)
	endPod(t, pod, 0, resultJSON)
	jobDone(t, job, true, "CompletionsReached")
	eventually(t, "model "+name+" Ready", func() error {
		if err := get(m); err != nil {
			return err
		}
		if m.Status.Phase != servingv1alpha1.ModelPhaseReady {
			return fmt.Errorf("phase %s", m.Status.Phase)
		}
		return nil
	})
	return m
}

// resultJSON is what `leo-runtime prepare` writes on success.
const resultJSON = `{"artifact":{"path":"/models/x/model.gguf","sizeBytes":7161089728,"sha256":"3f0b2e4c8f9b6a1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9","format":"gguf","quantization":"q8_0"},` +
	`"model":{"architecture":"llama","parameterCount":6738415616,"contextLength":4096,"vocabSize":32000,"embeddingLength":4096,"layers":32,"chatTemplate":false},"steps":["download","quantize"]}`

func ptr[T any](v T) *T { return &v }

func mustGetPodNamed(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := get(p); err != nil {
		t.Fatal(err)
	}
	return p
}
