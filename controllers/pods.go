package controllers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// How the operator learns what a Job's pods are doing, with no access to
// their volumes and no API access from the pods: while a pod runs, the
// tail of its log (JSON lines of progress, `kubectl logs` shows the same);
// once it has ended, its termination message (a result or a failure
// reason, kept in the pod's status by the kubelet). The pods need no
// ServiceAccount token and the operator only `get`s pods/log.

// logTailLines is how many lines of a running pod's log are read.
const logTailLines = 40

// jobPods lists a Job's pods, newest first.
func jobPods(ctx context.Context, r client.Reader, job *batchv1.Job) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(job.Namespace),
		// By the Job's UID too: a Job replaced under the same name must not
		// be judged on the pods of the one before.
		client.MatchingLabels{batchv1.JobNameLabel: job.Name, batchv1.ControllerUidLabel: string(job.UID)}); err != nil {
		return nil, err
	}
	out := pods.Items
	sort.Slice(out, func(i, j int) bool {
		ti, tj := out[i].CreationTimestamp, out[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return tj.Before(&ti)
		}
		return out[i].Name > out[j].Name
	})
	return out, nil
}

// terminated is the termination of a pod's container, if it has ended.
func terminated(p *corev1.Pod, container string) (*corev1.ContainerStateTerminated, bool) {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container && s.State.Terminated != nil {
			return s.State.Terminated, true
		}
	}
	return nil, false
}

// logTail reads the last lines of a running container's log through the
// API server (pods/log). A pod not yet scheduled or started has no log:
// that is not an error, just nothing.
func logTail(ctx context.Context, logs kubernetes.Interface, p *corev1.Pod, container string) []byte {
	if logs == nil || p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning {
		return nil
	}
	// Bounded in time and size: a log request is a long-running request
	// the API server does not time out, and one stuck read must not hold
	// the controller's worker.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, limit := int64(logTailLines), int64(64<<10)
	b, err := logs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: container, TailLines: &n, LimitBytes: &limit}).DoRaw(ctx)
	if err != nil {
		return nil // progress is best effort; the Job's status is the truth
	}
	return b
}

// progressLine is one JSON line of progress a runtime pod writes: pull's
// events (start, progress, retry, verified, done, error), prepare's phase
// and result, and the batch worker's progress.
type progressLine struct {
	Event      string `json:"event"`
	Phase      string `json:"phase"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Error      string `json:"error"`
	File       string `json:"file"`
}

// splitLines splits a log into its JSON lines.
func splitLines(log []byte) [][]byte {
	var out [][]byte
	for _, l := range bytes.Split(log, []byte("\n")) {
		l = bytes.TrimSpace(l)
		if len(l) > 0 && l[0] == '{' {
			out = append(out, l)
		}
	}
	return out
}

// progressLines parses the JSON lines of a log, skipping anything else.
func progressLines(log []byte) []progressLine {
	var out []progressLine
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var p progressLine
		if json.Unmarshal(line, &p) == nil && p.Event != "" {
			out = append(out, p)
		}
	}
	return out
}

// firstLine is the first non-empty line of a message, cut to n bytes, for
// a condition message.
func firstLine(s string, n int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// lastLine is the last non-empty line of a message.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
