package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
)

// BatchDeploymentReconciler runs a batch scoring run as an Indexed Job of
// `leo-runtime batch` workers and reports its progress.
type BatchDeploymentReconciler struct {
	applier
	// APIReader reads the Job's pods uncached.
	APIReader client.Reader
	// Logs reads pod logs (pods/log) for progress.
	Logs   kubernetes.Interface
	Events events.EventRecorder
	Config desired.Config
	// ProgressInterval is how often a running Job's progress is read.
	ProgressInterval time.Duration
}

// +kubebuilder:rbac:groups=serving.leo.dev,resources=batchdeployments,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=batchdeployments/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=batchdeployments/finalizers,verbs=update
// +kubebuilder:rbac:groups=serving.leo.dev,resources=llamamodels,verbs=get;list;watch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// batchCounts is a worker's progress as it prints it (JSON lines with
// event "progress") and as its termination message (the shard's summary,
// with reason and message when it failed).
type batchCounts struct {
	Event            string `json:"event"`
	FilesTotal       int32  `json:"files_total"`
	FilesSucceeded   int32  `json:"files_succeeded"`
	FilesFailed      int32  `json:"files_failed"`
	RowsTotal        int64  `json:"rows_total"`
	RowsSucceeded    int64  `json:"rows_succeeded"`
	RowsFailed       int64  `json:"rows_failed"`
	MiniBatchesTotal int32  `json:"mini_batches_total"`
	MiniBatchesDone  int32  `json:"mini_batches_done"`
	Reason           string `json:"reason"`
	Message          string `json:"message"`
}

// Reconcile starts the run once the model is Ready, keeps the Job's
// suspension as the spec says, and reports progress.
func (r *BatchDeploymentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var b servingv1alpha1.BatchDeployment
	if err := r.Get(ctx, req.NamespacedName, &b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !b.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // the Job goes with it (owner reference)
	}
	before := b.DeepCopy()
	b.Status.ObservedGeneration = b.Generation
	if b.Status.StartTime == nil { // the output may change until the run starts
		b.Status.OutputURI = desired.OutputURI(&b)
	}
	res, err := r.reconcile(ctx, &b)
	var notOurs errNotOurs
	if err != nil && asNotOurs(err, &notOurs) {
		b.Status.Phase = servingv1alpha1.BatchPhaseFailed
		setCondition(&b.Status.Conditions, b.Generation, servingv1alpha1.ConditionReady, false, "NameConflict", err.Error())
		res, err = ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if equalStatus(before.Status, b.Status) {
		return res, nil
	}
	if before.Status.Phase != b.Status.Phase {
		r.event(&b, phaseEventType(b.Status.Phase), string(b.Status.Phase), "Run", "run is %s", b.Status.Phase)
	}
	return res, r.Status().Patch(ctx, &b, client.MergeFrom(before))
}

func (r *BatchDeploymentReconciler) reconcile(ctx context.Context, b *servingv1alpha1.BatchDeployment) (ctrl.Result, error) {
	st := &b.Status
	gen := b.Generation
	var job batchv1.Job
	err := r.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: desired.BatchJobName(b)}, &job)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	if apierrors.IsNotFound(err) {
		if st.CompletionTime != nil {
			return ctrl.Result{}, nil // finished; the Job was deleted since
		}
		return r.start(ctx, b)
	}
	if !metav1.IsControlledBy(&job, b) {
		return ctrl.Result{}, errNotOurs{"Job", job.Name, controllerName(&job)}
	}
	if st.CompletionTime != nil {
		// Finished: the counts are final (the pods may be gone since), and a
		// run stopped by the error threshold stays stopped.
		if st.Phase == servingv1alpha1.BatchPhaseFailed && !finished(&job, batchv1.JobFailed) {
			return ctrl.Result{}, r.holdSuspended(ctx, &job)
		}
		return ctrl.Result{}, nil
	}
	st.JobName = job.Name
	if st.StartTime == nil && job.Status.StartTime != nil {
		st.StartTime = job.Status.StartTime.DeepCopy()
	}

	pods, err := jobPods(ctx, r.APIReader, &job)
	if err != nil {
		return ctrl.Result{}, err
	}
	p := r.progress(ctx, pods)
	st.Progress = &servingv1alpha1.BatchProgress{
		FilesTotal: p.FilesTotal, FilesSucceeded: p.FilesSucceeded, FilesFailed: p.FilesFailed,
		RowsTotal: p.RowsTotal, RowsSucceeded: p.RowsSucceeded, RowsFailed: p.RowsFailed,
		MiniBatchesTotal: p.MiniBatchesTotal, MiniBatchesDone: p.MiniBatchesDone,
	}

	threshold := int32(-1)
	if t := b.Spec.Settings.ErrorThreshold; t != nil {
		threshold = *t
	}
	switch {
	case finished(&job, batchv1.JobComplete):
		st.Phase = servingv1alpha1.BatchPhaseSucceeded
		st.CompletionTime = completion(&job)
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionSuspended, false, "Finished", "the run has finished")
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, true, "Succeeded",
			fmt.Sprintf("scored %d files (%d failed), %d rows (%d failed); output in %s", p.FilesSucceeded, p.FilesFailed, p.RowsSucceeded, p.RowsFailed, st.OutputURI))
		return ctrl.Result{}, nil
	case finished(&job, batchv1.JobFailed):
		reason, msg := batchFailure(&job, pods)
		st.Phase = servingv1alpha1.BatchPhaseFailed
		st.CompletionTime = completion(&job)
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionSuspended, false, "Finished", "the run has finished")
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, reason, msg)
		return ctrl.Result{}, nil
	case threshold >= 0 && p.FilesFailed > threshold:
		// Past the error threshold: stop every worker now (the Job is
		// suspended, which ends its pods) and say so.
		if err := r.holdSuspended(ctx, &job); err != nil {
			return ctrl.Result{}, err
		}
		st.Phase = servingv1alpha1.BatchPhaseFailed
		st.CompletionTime = ptr(metav1.Now())
		msg := fmt.Sprintf("%d input files failed, more than settings.errorThreshold (%d): the run was stopped", p.FilesFailed, threshold)
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionSuspended, false, "Finished", "the run has finished")
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, "ErrorThresholdExceeded", msg)
		r.event(b, corev1.EventTypeWarning, "ErrorThresholdExceeded", "Stop", "%s", msg)
		return ctrl.Result{}, nil
	}

	// Running or suspended: the Job follows spec.suspend.
	if ptrValue(job.Spec.Suspend) != b.Spec.Suspend {
		patch := client.MergeFrom(job.DeepCopy())
		job.Spec.Suspend = ptr(b.Spec.Suspend)
		if err := r.Patch(ctx, &job, patch); err != nil {
			return ctrl.Result{}, err
		}
		if b.Spec.Suspend {
			r.event(b, corev1.EventTypeNormal, "Suspended", "Suspend", "suspended Job %s: its workers stop and resume later where they stopped", job.Name)
		} else {
			r.event(b, corev1.EventTypeNormal, "Resumed", "Resume", "resumed Job %s", job.Name)
		}
	}
	if b.Spec.Suspend {
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionSuspended, true, "Suspended", "spec.suspend is true: no worker runs")
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, "Suspended", "the run is suspended")
		if st.StartTime == nil {
			st.Phase = servingv1alpha1.BatchPhasePending
		}
		return ctrl.Result{}, nil
	}
	if st.StartTime == nil {
		st.StartTime = ptr(metav1.Now())
	}
	st.Phase = servingv1alpha1.BatchPhaseRunning
	setCondition(&st.Conditions, gen, servingv1alpha1.ConditionSuspended, false, "Running", "spec.suspend is false")
	msg := fmt.Sprintf("%d of %d mini-batches done; %d rows scored, %d failed", p.MiniBatchesDone, p.MiniBatchesTotal, p.RowsSucceeded, p.RowsFailed)
	if p.MiniBatchesTotal == 0 {
		msg = "Job " + job.Name + " is running; no worker has reported progress yet"
	}
	reason := "Running"
	if why, detail, ok := newestWorkerFailure(newestPerIndex(pods)); ok {
		// A worker whose newest pod failed, retried by the Job up to its
		// backoff limit: "Running" alone would hide why nothing moves.
		reason = "WorkersFailing"
		msg = fmt.Sprintf("%d worker pods failed, retried up to %d times in all; %s; the newest failed with %s: %s",
			job.Status.Failed, ptrValue(job.Spec.BackoffLimit), msg, why, detail)
	} else if job.Status.Failed > 0 {
		msg += fmt.Sprintf("; %d worker pods failed and were retried", job.Status.Failed)
	}
	setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, reason, msg)
	return ctrl.Result{RequeueAfter: r.ProgressInterval}, nil
}

// start creates the Job once the model is Ready, or says what it waits for.
func (r *BatchDeploymentReconciler) start(ctx context.Context, b *servingv1alpha1.BatchDeployment) (ctrl.Result, error) {
	st := &b.Status
	gen := b.Generation
	st.Phase = servingv1alpha1.BatchPhasePending
	if b.Spec.Suspend {
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionSuspended, true, "Suspended", "spec.suspend is true: the run starts when it is false")
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, "Suspended", "the run has not started: it is suspended")
		return ctrl.Result{}, nil
	}
	setCondition(&st.Conditions, gen, servingv1alpha1.ConditionSuspended, false, "NotSuspended", "spec.suspend is false")
	var m servingv1alpha1.LlamaModel
	err := r.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Spec.Model}, &m)
	switch {
	case apierrors.IsNotFound(err):
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, "ModelNotFound", "LlamaModel "+b.Spec.Model+" does not exist")
		return ctrl.Result{}, nil
	case err != nil:
		return ctrl.Result{}, err
	case m.Status.Phase == servingv1alpha1.ModelPhaseFailed:
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, "ModelFailed", "LlamaModel "+b.Spec.Model+" failed: "+readyReason(&m))
		return ctrl.Result{}, nil
	case m.Status.Phase != servingv1alpha1.ModelPhaseReady || m.Status.Artifact == nil || !m.DeletionTimestamp.IsZero():
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, "ModelNotReady",
			"waiting for LlamaModel "+b.Spec.Model+": "+orReason(string(m.Status.Phase), "Pending"))
		return ctrl.Result{}, nil
	}
	job, err := desired.BatchJob(b, &m, r.Config)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := controllerutil.SetControllerReference(b, job, r.scheme); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.Create(ctx, job, client.FieldOwner(fieldOwner)); apierrors.IsAlreadyExists(err) {
		// Not in the cache, which holds only the operator's Jobs: unless
		// the cache is just behind, someone else's.
		var other batchv1.Job
		if err := r.reader.Get(ctx, client.ObjectKeyFromObject(job), &other); err != nil {
			return ctrl.Result{}, err
		}
		if !metav1.IsControlledBy(&other, b) {
			return ctrl.Result{}, errNotOurs{"Job", job.Name, controllerName(&other)}
		}
		return ctrl.Result{RequeueAfter: time.Second}, nil
	} else if err != nil {
		return ctrl.Result{}, err
	}
	r.event(b, corev1.EventTypeNormal, "Started", "CreateJob", "started Job %s: %d workers scoring %s with LlamaModel %s", job.Name, *job.Spec.Parallelism, b.Spec.Input.URI, m.Name)
	st.JobName = job.Name
	st.StartTime = ptr(metav1.Now())
	st.Phase = servingv1alpha1.BatchPhaseRunning
	setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, "Running", "Job "+job.Name+" started")
	return ctrl.Result{RequeueAfter: r.ProgressInterval}, nil
}

// holdSuspended suspends the Job if it is not.
func (r *BatchDeploymentReconciler) holdSuspended(ctx context.Context, job *batchv1.Job) error {
	if ptrValue(job.Spec.Suspend) {
		return nil
	}
	patch := client.MergeFrom(job.DeepCopy())
	job.Spec.Suspend = ptr(true)
	return r.Patch(ctx, job, patch)
}

// completionIndex is a Job pod's completion index ("" for none).
func completionIndex(p *corev1.Pod) string {
	if idx := p.Labels[batchv1.JobCompletionIndexAnnotation]; idx != "" {
		return idx
	}
	return p.Annotations[batchv1.JobCompletionIndexAnnotation]
}

// newestPerIndex is the newest pod of each completion index (pods newest
// first, as jobPods lists them; so is the result).
func newestPerIndex(pods []corev1.Pod) []corev1.Pod {
	var out []corev1.Pod
	seen := map[string]bool{}
	for i := range pods {
		if idx := completionIndex(&pods[i]); !seen[idx] {
			seen[idx] = true
			out = append(out, pods[i])
		}
	}
	return out
}

// progress sums the workers' counts: for each completion index, the newest
// pod's termination message when it has ended, else the last progress line
// of its log.
func (r *BatchDeploymentReconciler) progress(ctx context.Context, pods []corev1.Pod) batchCounts {
	var sum batchCounts
	seen := map[string]bool{}
	for i := range pods { // newest first
		p := &pods[i]
		idx := completionIndex(p)
		if seen[idx] {
			continue
		}
		c, ok := workerCounts(ctx, r.Logs, p)
		if !ok {
			continue // a pod that has not reported yet: an older one may have
		}
		seen[idx] = true
		sum.FilesTotal += c.FilesTotal
		sum.FilesSucceeded += c.FilesSucceeded
		sum.FilesFailed += c.FilesFailed
		sum.RowsTotal += c.RowsTotal
		sum.RowsSucceeded += c.RowsSucceeded
		sum.RowsFailed += c.RowsFailed
		sum.MiniBatchesTotal += c.MiniBatchesTotal
		sum.MiniBatchesDone += c.MiniBatchesDone
	}
	return sum
}

func workerCounts(ctx context.Context, logs kubernetes.Interface, p *corev1.Pod) (batchCounts, bool) {
	if t, ok := terminated(p, "batch"); ok {
		var c batchCounts
		return c, json.Unmarshal([]byte(t.Message), &c) == nil
	}
	var last []byte
	for _, line := range splitLines(logTail(ctx, logs, p, "batch")) {
		var probe struct {
			Event string `json:"event"`
		}
		if json.Unmarshal(line, &probe) == nil && probe.Event == "progress" {
			last = line
		}
	}
	var c batchCounts
	return c, last != nil && json.Unmarshal(last, &c) == nil
}

// batchFailure says why a run failed: the reason a worker gave, else the
// Job's.
func batchFailure(job *batchv1.Job, pods []corev1.Pod) (string, string) {
	if reason, msg, ok := newestWorkerFailure(pods); ok {
		return reason, msg
	}
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return orReason(c.Reason, "JobFailed"), firstLine(c.Message, 512)
		}
	}
	return "JobFailed", "Job " + job.Name + " failed"
}

// newestWorkerFailure is the reason and message of the newest worker pod
// that ended with an error (pods newest first, as jobPods lists them):
// the reason `leo-runtime batch` wrote in its termination message, else
// the container's and the message's last line (a crash's error), or the
// pod's own for one that failed before its container ran.
func newestWorkerFailure(pods []corev1.Pod) (reason, msg string, ok bool) {
	for i := range pods {
		t, ok := terminated(&pods[i], "batch")
		if !ok || t.ExitCode == 0 {
			if p := &pods[i]; !ok && p.Status.Phase == corev1.PodFailed {
				return orReason(p.Status.Reason, "WorkerFailed"), firstLine(orReason(p.Status.Message, "the pod failed before its container ran"), 512), true
			}
			continue
		}
		var c batchCounts
		if json.Unmarshal([]byte(t.Message), &c) == nil && c.Reason != "" {
			return c.Reason, firstLine(c.Message, 512), true
		}
		return orReason(t.Reason, "WorkerFailed"), firstLine(lastLine(t.Message), 512), true
	}
	return "", "", false
}

func completion(job *batchv1.Job) *metav1.Time {
	if job.Status.CompletionTime != nil {
		return job.Status.CompletionTime.DeepCopy()
	}
	for _, c := range job.Status.Conditions {
		if (c.Type == batchv1.JobFailed || c.Type == batchv1.JobComplete) && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.DeepCopy()
		}
	}
	return nil
}

func phaseEventType(p servingv1alpha1.BatchPhase) string {
	if p == servingv1alpha1.BatchPhaseFailed {
		return corev1.EventTypeWarning
	}
	return corev1.EventTypeNormal
}

func (r *BatchDeploymentReconciler) event(b *servingv1alpha1.BatchDeployment, typ, reason, action, note string, args ...any) {
	if r.Events != nil {
		r.Events.Eventf(b, nil, typ, reason, action, note, args...)
	}
}

// SetupWithManager registers the reconciler: runs, their Jobs, and the
// models they wait for.
func (r *BatchDeploymentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.ProgressInterval == 0 {
		r.ProgressInterval = 5 * time.Second
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &servingv1alpha1.BatchDeployment{}, modelIndex, func(o client.Object) []string {
		return []string{o.(*servingv1alpha1.BatchDeployment).Spec.Model}
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&servingv1alpha1.BatchDeployment{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&batchv1.Job{}).
		Watches(&servingv1alpha1.LlamaModel{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var list servingv1alpha1.BatchDeploymentList
			if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{modelIndex: o.GetName()}); err != nil {
				return nil
			}
			out := make([]reconcile.Request, 0, len(list.Items))
			for _, b := range list.Items {
				if b.Status.StartTime == nil { // only runs not started wait for models
					out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&b)})
				}
			}
			return out
		})).
		Named("batchdeployment").
		// Several objects at once: a reconcile mostly waits on the API server.
		WithOptions(controller.Options{MaxConcurrentReconciles: maxConcurrentReconciles}).
		Complete(r)
}

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
