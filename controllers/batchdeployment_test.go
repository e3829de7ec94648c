package controllers_test

import (
	"fmt"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
)

func reviews(ns string, suspend bool) *servingv1alpha1.BatchDeployment {
	return &servingv1alpha1.BatchDeployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"},
		Spec: servingv1alpha1.BatchDeploymentSpec{
			Model:         "llama",
			Input:         servingv1alpha1.BatchInput{URI: "pvc://batch-data/reviews", Format: servingv1alpha1.InputFormatCSV},
			Output:        servingv1alpha1.BatchOutput{URI: "pvc://batch-data/predictions"},
			InstanceCount: 2,
			Settings: servingv1alpha1.BatchSettings{
				MiniBatchSize: 5, ErrorThreshold: ptr(int32(3)),
				RetrySettings: servingv1alpha1.RetrySettings{MaxRetries: ptr(int32(2)), Timeout: "60s"},
			},
			Parameters: servingv1alpha1.GenerationParameters{MaxNewTokens: 64},
			Suspend:    suspend,
		},
	}
}

// progressLine is a worker's progress as `leo-runtime batch` prints it.
func progressLine(filesTotal, ok, failed int, rows, rowsFailed int64, mbTotal, mbDone int) string {
	return fmt.Sprintf(`{"event":"progress","files_total":%d,"files_succeeded":%d,"files_failed":%d,"rows_total":%d,"rows_succeeded":%d,"rows_failed":%d,"mini_batches_total":%d,"mini_batches_done":%d}`,
		filesTotal, ok, failed, rows+rowsFailed, rows, rowsFailed, mbTotal, mbDone)
}

// A run created suspended waits; resumed, it starts an Indexed Job once
// the model is Ready, sums its workers' progress, follows suspend, and
// succeeds.
func TestBatchRun(t *testing.T) {
	ns := namespace(t)
	b := reviews(ns, true)
	create(t, b)
	eventually(t, "Suspended, no Job", func() error {
		if err := get(b); err != nil {
			return err
		}
		if b.Status.Phase != servingv1alpha1.BatchPhasePending {
			return fmt.Errorf("phase %s", b.Status.Phase)
		}
		return wantCondition(b.Status.Conditions, servingv1alpha1.ConditionSuspended, metav1.ConditionTrue, "Suspended")
	})
	update(t, b, func(b *servingv1alpha1.BatchDeployment) { b.Spec.Suspend = false })
	eventually(t, "waiting for the model", func() error {
		if err := get(b); err != nil {
			return err
		}
		return wantCondition(b.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "ModelNotFound")
	})
	if err := get(&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}}); err == nil {
		t.Fatal("a Job before the model is Ready")
	}
	m := readyModel(t, ns, "llama")

	job := jobOf(t, ns, "reviews")
	if *job.Spec.Completions != 2 || *job.Spec.Parallelism != 2 || *job.Spec.CompletionMode != batchv1.IndexedCompletion {
		t.Errorf("Job completions %d parallelism %d mode %s", *job.Spec.Completions, *job.Spec.Parallelism, *job.Spec.CompletionMode)
	}
	args := strings.Join(job.Spec.Template.Spec.Containers[0].Args, " ")
	for _, want := range []string{"batch --model /models/" + m.Status.Artifact.Path, "--input /data/0/reviews", "--output /data/0/predictions",
		"--instance-count 2", "--mini-batch-size 5", "--error-threshold 3", "--max-retries 2", "--timeout 60s", "--max-new-tokens 64"} {
		if !strings.Contains(args, want) {
			t.Errorf("batch args %q lack %q", args, want)
		}
	}
	jobStatus(t, job, 2, 0)
	idx := func(i string) map[string]string { return map[string]string{batchv1.JobCompletionIndexAnnotation: i} }
	w0 := runPod(t, job, "reviews-0-a", "batch", progressLine(4, 1, 0, 120, 1, 2, 1)+"\n", idx("0"))
	runPod(t, job, "reviews-1-a", "batch", progressLine(3, 2, 0, 200, 0, 1, 0)+"\n", idx("1"))
	eventually(t, "progress summed over the workers", func() error {
		if err := get(b); err != nil {
			return err
		}
		p := b.Status.Progress
		if p == nil || p.FilesTotal != 7 || p.FilesSucceeded != 3 || p.RowsSucceeded != 320 || p.RowsFailed != 1 || p.MiniBatchesTotal != 3 || p.MiniBatchesDone != 1 {
			return fmt.Errorf("progress %+v", p)
		}
		if b.Status.Phase != servingv1alpha1.BatchPhaseRunning || b.Status.StartTime == nil || b.Status.JobName != "reviews" {
			return fmt.Errorf("phase %s, start %v, job %q", b.Status.Phase, b.Status.StartTime, b.Status.JobName)
		}
		return nil
	})

	update(t, b, func(b *servingv1alpha1.BatchDeployment) { b.Spec.Suspend = true })
	eventually(t, "the Job suspended", func() error {
		if err := get(job); err != nil {
			return err
		}
		if job.Spec.Suspend == nil || !*job.Spec.Suspend {
			return fmt.Errorf("Job not suspended")
		}
		return nil
	})
	hasEvent(t, ns, "reviews", "Suspended")
	update(t, b, func(b *servingv1alpha1.BatchDeployment) { b.Spec.Suspend = false })
	eventually(t, "the Job resumed", func() error {
		if err := get(job); err != nil {
			return err
		}
		if *job.Spec.Suspend {
			return fmt.Errorf("Job still suspended")
		}
		return nil
	})

	endPod(t, w0, 0, progressLine(4, 4, 0, 400, 1, 2, 2))
	w1 := mustGetPodNamed(t, ns, "reviews-1-a")
	endPod(t, w1, 0, progressLine(3, 3, 0, 300, 0, 1, 1))
	jobDone(t, job, true, "CompletionsReached")
	eventually(t, "Succeeded", func() error {
		if err := get(b); err != nil {
			return err
		}
		if b.Status.Phase != servingv1alpha1.BatchPhaseSucceeded || b.Status.CompletionTime == nil || b.Status.Progress.RowsSucceeded != 700 {
			return fmt.Errorf("phase %s, completion %v, progress %+v", b.Status.Phase, b.Status.CompletionTime, b.Status.Progress)
		}
		if b.Status.OutputURI != "pvc://batch-data/predictions" {
			return fmt.Errorf("outputURI %q", b.Status.OutputURI)
		}
		return wantCondition(b.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionTrue, "Succeeded")
	})
}

// Past the error threshold the run is stopped and Failed, and stays so.
func TestBatchErrorThreshold(t *testing.T) {
	ns := namespace(t)
	readyModel(t, ns, "llama")
	b := reviews(ns, false)
	create(t, b)
	job := jobOf(t, ns, "reviews")
	jobStatus(t, job, 2, 0)
	idx := func(i string) map[string]string { return map[string]string{batchv1.JobCompletionIndexAnnotation: i} }
	runPod(t, job, "reviews-0-a", "batch", progressLine(5, 1, 2, 10, 3, 2, 1)+"\n", idx("0"))
	w1 := runPod(t, job, "reviews-1-a", "batch", progressLine(5, 1, 1, 10, 1, 2, 1)+"\n", idx("1"))
	eventually(t, "3 failed files: still running (the threshold is 3)", func() error {
		if err := get(b); err != nil {
			return err
		}
		if b.Status.Progress == nil || b.Status.Progress.FilesFailed != 3 || b.Status.Phase != servingv1alpha1.BatchPhaseRunning {
			return fmt.Errorf("phase %s progress %+v", b.Status.Phase, b.Status.Progress)
		}
		return nil
	})
	kubelet.AppendLog(ns, w1.Name, "batch", progressLine(5, 1, 2, 10, 2, 2, 2)+"\n")
	eventually(t, "Failed: ErrorThresholdExceeded, the Job suspended", func() error {
		if err := get(b); err != nil {
			return err
		}
		if b.Status.Phase != servingv1alpha1.BatchPhaseFailed || b.Status.CompletionTime == nil {
			return fmt.Errorf("phase %s", b.Status.Phase)
		}
		if err := wantCondition(b.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "ErrorThresholdExceeded"); err != nil {
			return err
		}
		if err := get(job); err != nil {
			return err
		}
		if job.Spec.Suspend == nil || !*job.Spec.Suspend {
			return fmt.Errorf("the Job runs on")
		}
		return nil
	})
	hasEvent(t, ns, "reviews", "ErrorThresholdExceeded")
}

// A worker that fails for good fails the run with its reason.
func TestBatchWorkerFailure(t *testing.T) {
	ns := namespace(t)
	readyModel(t, ns, "llama")
	b := reviews(ns, false)
	create(t, b)
	job := jobOf(t, ns, "reviews")
	w := runPod(t, job, "reviews-0-a", "batch", "", map[string]string{batchv1.JobCompletionIndexAnnotation: "0"})
	endPod(t, w, desired.BatchExitPermanent, `{"reason":"InputNotFound","message":"pvc://batch-data/reviews: no such folder"}`)
	jobDone(t, job, false, "PodFailurePolicy")
	eventually(t, "Failed with the worker's reason", func() error {
		if err := get(b); err != nil {
			return err
		}
		if b.Status.Phase != servingv1alpha1.BatchPhaseFailed {
			return fmt.Errorf("phase %s", b.Status.Phase)
		}
		return wantCondition(b.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "InputNotFound")
	})
}

// A worker whose newest pod failed (the Job retries it) leaves the run
// Running with reason WorkersFailing and the pod's error; once a retry
// runs, the reason is Running again and the message counts the failures.
func TestBatchWorkersFailing(t *testing.T) {
	ns := namespace(t)
	readyModel(t, ns, "llama")
	b := reviews(ns, false)
	create(t, b)
	job := jobOf(t, ns, "reviews")
	idx := map[string]string{batchv1.JobCompletionIndexAnnotation: "0"}
	w := runPod(t, job, "reviews-0-a", "batch", "", idx)
	jobStatus(t, job, 2, 0)
	eventually(t, "Running", func() error {
		if err := get(b); err != nil {
			return err
		}
		return wantCondition(b.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "Running")
	})
	endPod(t, w, 1, "leo-runtime batch: creating /data/0/predictions/.leo-batch/shard-0: permission denied")
	jobStatus(t, job, 1, 1)
	eventually(t, "WorkersFailing with the worker's error", func() error {
		if err := get(b); err != nil {
			return err
		}
		if b.Status.Phase != servingv1alpha1.BatchPhaseRunning {
			return fmt.Errorf("phase %s", b.Status.Phase)
		}
		if err := wantCondition(b.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "WorkersFailing"); err != nil {
			return err
		}
		msg := condition(b.Status.Conditions, servingv1alpha1.ConditionReady).Message
		for _, want := range []string{"1 worker pods failed, retried up to 6 times", "the newest failed with Error: ", "permission denied"} {
			if !strings.Contains(msg, want) {
				return fmt.Errorf("message %q lacks %q", msg, want)
			}
		}
		return nil
	})
	runPod(t, job, "reviews-0-b", "batch", "", idx)
	jobStatus(t, job, 2, 1)
	eventually(t, "Running again, the failure counted", func() error {
		if err := get(b); err != nil {
			return err
		}
		if err := wantCondition(b.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "Running"); err != nil {
			return err
		}
		if msg := condition(b.Status.Conditions, servingv1alpha1.ConditionReady).Message; !strings.Contains(msg, "1 worker pods failed and were retried") {
			return fmt.Errorf("message %q", msg)
		}
		return nil
	})

	// A pod that fails before its container runs (evicted) counts too,
	// with the pod's own reason.
	c := runPod(t, job, "reviews-0-c", "batch", "", idx)
	updateStatus(t, c, func(p *corev1.Pod) {
		p.Status.Phase, p.Status.Reason, p.Status.Message = corev1.PodFailed, "Evicted", "The node was low on resource: memory."
		p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	})
	jobStatus(t, job, 1, 2)
	eventually(t, "WorkersFailing with the eviction", func() error {
		if err := get(b); err != nil {
			return err
		}
		if err := wantCondition(b.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "WorkersFailing"); err != nil {
			return err
		}
		if msg := condition(b.Status.Conditions, servingv1alpha1.ConditionReady).Message; !strings.Contains(msg, "Evicted: The node was low on resource") {
			return fmt.Errorf("message %q", msg)
		}
		return nil
	})
}
