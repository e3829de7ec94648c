package kubelettest_test

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leo-operator/leo/internal/kubelettest"
	"github.com/leo-operator/leo/internal/testenv"
)

// TestLogsThroughAPIServer reads pod logs with client-go through a real
// kube-apiserver, which proxies the requests to the fake kubelet.
func TestLogsThroughAPIServer(t *testing.T) {
	env, err := testenv.New()
	if err != nil {
		t.Fatal(err)
	}
	k := kubelettest.Start(t)
	k.ConfigureAPIServer(env)
	t.Cleanup(func() { _ = env.Stop() })
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd: %v", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := k.RegisterNode(ctx, c, "node-1"); err != nil {
		t.Fatal(err)
	}
	var node corev1.Node
	if err := c.Get(ctx, client.ObjectKey{Name: "node-1"}, &node); err != nil {
		t.Fatal(err)
	}
	if got := node.Status.DaemonEndpoints.KubeletEndpoint.Port; int(got) != k.Port() {
		t.Fatalf("node's kubelet port %d, want %d", got, k.Port())
	}

	const ns = "logs"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	newPod := func(name string, containers ...string) {
		t.Helper()
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       corev1.PodSpec{NodeName: "node-1"},
		}
		for _, cn := range containers {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: cn, Image: "x"})
		}
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	newPod("job-0", "main")
	newPod("job-1", "main", "sidecar")
	newPod("job-2", "main")

	k.SetLog(ns, "job-0", "main", "step 1/3\nstep 2/3\nstep 3/3\n")
	pods := cs.CoreV1().Pods(ns)
	read := func(pod string, opts *corev1.PodLogOptions) (string, error) {
		b, err := pods.GetLogs(pod, opts).DoRaw(ctx)
		return string(b), err
	}
	expect := func(what, pod string, opts *corev1.PodLogOptions, want string) {
		t.Helper()
		got, err := read(pod, opts)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got != want {
			t.Fatalf("%s: got %q, want %q", what, got, want)
		}
	}

	expect("whole log", "job-0", &corev1.PodLogOptions{Container: "main"}, "step 1/3\nstep 2/3\nstep 3/3\n")
	expect("no container named (the only one)", "job-0", &corev1.PodLogOptions{}, "step 1/3\nstep 2/3\nstep 3/3\n")
	expect("tailLines=2", "job-0", &corev1.PodLogOptions{Container: "main", TailLines: ptr[int64](2)}, "step 2/3\nstep 3/3\n")
	expect("tailLines=0", "job-0", &corev1.PodLogOptions{Container: "main", TailLines: ptr[int64](0)}, "")
	expect("limitBytes=11", "job-0", &corev1.PodLogOptions{Container: "main", LimitBytes: ptr[int64](11)}, "step 1/3\nst")
	expect("tailLines=1, limitBytes=4", "job-0", &corev1.PodLogOptions{Container: "main", TailLines: ptr[int64](1), LimitBytes: ptr[int64](4)}, "step")
	k.AppendLog(ns, "job-0", "main", "done\n")
	expect("after AppendLog, tailLines=1", "job-0", &corev1.PodLogOptions{Container: "main", TailLines: ptr[int64](1)}, "done\n")
	if n := k.RequestCount(ns, "job-0"); n != 7 {
		t.Fatalf("the kubelet served %d requests for job-0, want 7", n)
	}
	last := k.Requests()[len(k.Requests())-1]
	if last.Container != "main" || last.Query.Get("tailLines") != "1" || last.Status != 200 {
		t.Fatalf("last request %+v", last)
	}

	// A container the pod does not have: the API server answers 400 itself.
	_, err = read("job-0", &corev1.PodLogOptions{Container: "nope"})
	if !apierrors.IsBadRequest(err) {
		t.Fatalf("container not in the pod: got %v, want a BadRequest", err)
	}
	if n := k.RequestCount(ns, "job-0"); n != 7 {
		t.Fatalf("the API server forwarded a request for a container the pod lacks (%d requests)", n)
	}
	// A container or pod the kubelet does not know: its 404 comes back as
	// NotFound (the API server keeps the status but not the kubelet's body).
	k.SetLog(ns, "job-1", "main", "hello\n")
	for _, tc := range []struct{ pod, container string }{{"job-1", "sidecar"}, {"job-2", "main"}} {
		_, err = read(tc.pod, &corev1.PodLogOptions{Container: tc.container})
		if !apierrors.IsNotFound(err) {
			t.Fatalf("%s/%s unknown to the kubelet: got %v, want NotFound", tc.pod, tc.container, err)
		}
		if r := k.Requests(); r[len(r)-1].Pod != tc.pod || r[len(r)-1].Status != 404 {
			t.Fatalf("%s/%s: the kubelet's last request was %+v, want its 404", tc.pod, tc.container, r[len(r)-1])
		}
	}

	// previous=true without a previous instance: the kubelet's 400 comes
	// back as BadRequest with its message, which Stream and Do decode from
	// the API server's Status; DoRaw keeps only the code.
	_, err = read("job-1", &corev1.PodLogOptions{Container: "main", Previous: true})
	if !apierrors.IsBadRequest(err) {
		t.Fatalf("previous without one, DoRaw: got %v, want BadRequest", err)
	}
	_, err = pods.GetLogs("job-1", &corev1.PodLogOptions{Container: "main", Previous: true}).Stream(ctx)
	if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), `previous terminated container "main" in pod "job-1" not found`) {
		t.Fatalf("previous without one, Stream: got %v, want BadRequest with the kubelet's message", err)
	}
	err = pods.GetLogs("job-1", &corev1.PodLogOptions{Container: "main", Previous: true}).Do(ctx).Error()
	if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), `previous terminated container "main" in pod "job-1" not found`) {
		t.Fatalf("previous without one, Do: got %v, want BadRequest with the kubelet's message", err)
	}

	// previous, timestamps, sinceTime.
	k.SetPreviousLog(ns, "job-1", "main", "crashed\n")
	expect("previous", "job-1", &corev1.PodLogOptions{Container: "main", Previous: true}, "crashed\n")
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	k.SetLog(ns, "job-1", "main", "")
	k.AppendLogAt(ns, "job-1", "main", "a\n", t0)
	k.AppendLogAt(ns, "job-1", "main", "b\n", t0.Add(time.Hour))
	expect("timestamps", "job-1", &corev1.PodLogOptions{Container: "main", Timestamps: true},
		"2030-01-02T03:04:05.000000600Z a\n2030-01-02T04:04:05.000000600Z b\n")
	expect("sinceTime", "job-1", &corev1.PodLogOptions{Container: "main", SinceTime: ptr(metav1.NewTime(t0.Add(time.Minute)))}, "b\n")

	// follow streams appended lines until the container's log ends.
	k.SetLog(ns, "job-0", "main", "epoch 1\n")
	rc, err := pods.GetLogs("job-0", &corev1.PodLogOptions{Container: "main", Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	br := bufio.NewReader(rc)
	readLine := func(want string) {
		t.Helper()
		got, err := br.ReadString('\n')
		if err != nil || got != want {
			t.Fatalf("follow: got %q, %v; want %q", got, err, want)
		}
	}
	readLine("epoch 1\n")
	k.AppendLog(ns, "job-0", "main", "epoch 2\n")
	readLine("epoch 2\n")
	k.AppendLog(ns, "job-0", "main", "epoch 3\n")
	k.EndLog(ns, "job-0", "main")
	readLine("epoch 3\n")
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("follow after EndLog: got %q, %v; want the end of the stream", rest, err)
	}
}

func ptr[T any](v T) *T { return &v }
