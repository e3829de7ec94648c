package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
)

// modelFinalizer holds a deleted LlamaModel until what it made is gone:
// its share of a download Job, the claim it created, or its files on an
// existing claim.
const modelFinalizer = "serving.leo.dev/cleanup"

// cleanupTimeout bounds how long a deleted model waits, from its deletion,
// for its files to be removed from an existing claim; past it the model
// goes anyway (with a Warning event naming the directory), so deletion
// never hangs.
const cleanupTimeout = 10 * time.Minute

// LlamaModelReconciler downloads, converts and quantizes models into a
// cache claim with a Job of `leo-runtime prepare`, and reports progress.
type LlamaModelReconciler struct {
	client.Client
	Scheme *runtime.Scheme
	// APIReader reads pods uncached: only a running or finished Job's pods
	// are read, so the manager does not cache every pod of the cluster.
	APIReader client.Reader
	// Logs reads pod logs (pods/log) for progress.
	Logs   kubernetes.Interface
	Events events.EventRecorder
	Config desired.Config
	// ProgressInterval is how often a running Job's progress is read.
	ProgressInterval time.Duration
}

// +kubebuilder:rbac:groups=serving.leo.dev,resources=llamamodels,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=llamamodels/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=llamamodels/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile makes the model's claim and prepare Job exist and reports what
// the Job does.
func (r *LlamaModelReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var m servingv1alpha1.LlamaModel
	if err := r.Get(ctx, req.NamespacedName, &m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !m.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, &m)
	}
	if !controllerutil.ContainsFinalizer(&m, modelFinalizer) {
		patch := client.MergeFromWithOptions(m.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(&m, modelFinalizer)
		if err := r.Patch(ctx, &m, patch); err != nil {
			return ctrl.Result{}, err
		}
	}
	before := m.DeepCopy()
	m.Status.ObservedGeneration = m.Generation
	res, err := r.reconcile(ctx, &m)
	var notOurs errNotOurs
	var reported reportedError
	switch {
	case err == nil:
	case asNotOurs(err, &notOurs):
		r.fail(&m, "NameConflict", err.Error())
		res, err = ctrl.Result{}, nil
	case errors.As(err, &reported):
		// Said in status, and tried again with backoff.
		setCondition(&m.Status.Conditions, m.Generation, servingv1alpha1.ConditionReady, false, reported.reason, firstLine(reported.Error(), 900))
	default:
		return ctrl.Result{}, err
	}
	if !equalStatus(before.Status, m.Status) {
		if before.Status.Phase != m.Status.Phase {
			log.FromContext(ctx).Info("phase", "from", before.Status.Phase, "to", m.Status.Phase)
		}
		if perr := r.Status().Patch(ctx, &m, client.MergeFrom(before)); perr != nil {
			return ctrl.Result{}, perr
		}
	}
	return res, err
}

// reportedError is an error the model's status states (a Job the API
// server refused to create, say) before the reconcile is retried.
type reportedError struct {
	reason string
	error
}

func (r *LlamaModelReconciler) reconcile(ctx context.Context, m *servingv1alpha1.LlamaModel) (ctrl.Result, error) {
	claim := desired.CacheClaimName(m)
	if pvc := desired.CacheClaim(m); pvc != nil {
		var have corev1.PersistentVolumeClaim
		err := r.Get(ctx, client.ObjectKeyFromObject(pvc), &have)
		switch {
		case apierrors.IsNotFound(err):
			if err := controllerutil.SetControllerReference(m, pvc, r.Scheme); err != nil {
				return ctrl.Result{}, err
			}
			if err := r.Create(ctx, pvc, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
				return ctrl.Result{}, err
			}
			r.event(m, corev1.EventTypeNormal, "CreatedClaim", "Created", "created PersistentVolumeClaim %s (%s) for the model's files", pvc.Name, pvc.Spec.Resources.Requests.Storage())
		case err != nil:
			return ctrl.Result{}, err
		case !metav1.IsControlledBy(&have, m):
			return ctrl.Result{}, errNotOurs{"PersistentVolumeClaim", have.Name, controllerName(&have)}
		}
	} else {
		var have corev1.PersistentVolumeClaim
		err := r.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: claim}, &have)
		if apierrors.IsNotFound(err) {
			m.Status.Phase = servingv1alpha1.ModelPhasePending
			setCondition(&m.Status.Conditions, m.Generation, servingv1alpha1.ConditionReady, false, "ClaimNotFound",
				fmt.Sprintf("storage.existingClaim %s does not exist in namespace %s: create it, or remove existingClaim to let leo create one", claim, m.Namespace))
			return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
		}
		if err != nil {
			return ctrl.Result{}, err
		}
	}

	artifactPath := desired.ArtifactPath(m.Spec)
	dir := desired.ArtifactDir(m.Spec)
	var job batchv1.Job
	err := r.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: desired.PrepareJobName(claim, dir)}, &job)
	if apierrors.IsNotFound(err) {
		if a := m.Status.Artifact; a != nil && a.ClaimName == claim && a.Path == artifactPath && m.Status.Phase == servingv1alpha1.ModelPhaseReady {
			return ctrl.Result{}, nil // done, and the Job was cleaned up since
		}
		if cleaning, err := r.cleanupRunning(ctx, m.Namespace, desired.ArtifactHash(claim, dir)); err != nil || cleaning {
			// A deleted model's files are being removed from this very
			// directory: start the download once that is done.
			m.Status.Phase = servingv1alpha1.ModelPhasePending
			setCondition(&m.Status.Conditions, m.Generation, servingv1alpha1.ConditionReady, false, "WaitingForCleanup",
				"the files of a deleted model with the same source are being removed from "+dir+"; the download starts after")
			return ctrl.Result{RequeueAfter: 2 * time.Second}, err
		}
		job := desired.PrepareJob(m, r.Config)
		if err := controllerutil.SetControllerReference(m, job, r.Scheme); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.Create(ctx, job, client.FieldOwner(fieldOwner)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return ctrl.Result{RequeueAfter: time.Second}, nil // another model's, just made: share it
			}
			return ctrl.Result{}, reportedError{"JobCreateFailed", fmt.Errorf("creating Job %s: %w", job.Name, err)}
		}
		r.event(m, corev1.EventTypeNormal, "Downloading", "CreateJob", "started Job %s: %s into %s on claim %s", job.Name, m.Spec.Source.URI, artifactPath, claim)
		m.Status.Phase = servingv1alpha1.ModelPhaseDownloading
		m.Status.Artifact, m.Status.Model = nil, nil
		setCondition(&m.Status.Conditions, m.Generation, servingv1alpha1.ConditionDownloaded, false, "Downloading", "Job "+job.Name+" is starting")
		setCondition(&m.Status.Conditions, m.Generation, servingv1alpha1.ConditionReady, false, "Downloading", "the weights are not downloaded yet")
		return ctrl.Result{RequeueAfter: r.ProgressInterval}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}

	if !hasOwner(&job, m.UID) {
		// Another model with the same source, quantization and claim made
		// this Job: share it, and keep it while either model exists.
		patch := client.MergeFromWithOptions(job.DeepCopy(), client.MergeFromWithOptimisticLock{})
		job.OwnerReferences = append(job.OwnerReferences, ownerRef(m, false))
		if job.Annotations == nil {
			job.Annotations = map[string]string{}
		}
		job.Annotations[desired.GenerationAnnotation(m)] = strconv.FormatInt(m.Generation, 10)
		if err := r.Patch(ctx, &job, patch); err != nil {
			return ctrl.Result{}, err
		}
		r.event(m, corev1.EventTypeNormal, "SharedDownload", "ShareJob", "shares Job %s with the other models of %s on claim %s", job.Name, artifactPath, claim)
	}
	if finished(&job, batchv1.JobComplete) && m.Status.Phase == servingv1alpha1.ModelPhaseReady && m.Status.Artifact != nil &&
		m.Status.Artifact.Path == artifactPath && m.Status.Artifact.ClaimName == claim {
		return ctrl.Result{}, nil // done: its pods may be gone since, and need not be read
	}
	if finished(&job, batchv1.JobFailed) && joinedAt(&job, m) < m.Generation {
		// This model's spec changed since it made or joined the Job that
		// failed (new credentials, say): try again with a new Job.
		if err := r.Delete(ctx, &job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
		r.event(m, corev1.EventTypeNormal, "Retrying", "DeleteJob", "the spec changed since Job %s failed: starting again", job.Name)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return r.statusFromJob(ctx, m, &job, claim, artifactPath)
}

// prepareResult is what `leo-runtime prepare` writes as its termination
// message: the artifact and the model's facts, or why it failed.
type prepareResult struct {
	Artifact *servingv1alpha1.ModelArtifact `json:"artifact"`
	Model    *servingv1alpha1.ModelFacts    `json:"model"`
	// Steps are the steps that ran: download, convert, quantize.
	Steps   []string `json:"steps"`
	Reason  string   `json:"reason"`
	Message string   `json:"message"`
}

func (r *LlamaModelReconciler) statusFromJob(ctx context.Context, m *servingv1alpha1.LlamaModel, job *batchv1.Job, claim, artifactPath string) (ctrl.Result, error) {
	pods, err := jobPods(ctx, r.APIReader, job)
	if err != nil {
		return ctrl.Result{}, err
	}
	st := &m.Status
	st.Attempts = job.Status.Failed + job.Status.Active + job.Status.Succeeded
	gen := m.Generation
	switch {
	case finished(job, batchv1.JobComplete):
		res, ok := podResult(pods, "prepare", true)
		if !ok || res.Artifact == nil {
			// The pods are gone and with them the result: run prepare again,
			// which finds the artifact in place and only reports it.
			if err := r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, err
			}
			r.event(m, corev1.EventTypeWarning, "ResultLost", "DeleteJob", "Job %s succeeded but its pod's result is gone: running it again to read the artifact", job.Name)
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		quant := m.Spec.Quantization
		if quant == "" {
			quant = servingv1alpha1.QuantizationNone
		}
		if res.Artifact.Quantization != "" {
			quant = res.Artifact.Quantization
		}
		st.Artifact = &servingv1alpha1.ModelArtifact{
			Path: artifactPath, ClaimName: claim, SizeBytes: res.Artifact.SizeBytes, SHA256: res.Artifact.SHA256,
			Format: servingv1alpha1.ModelFormatGGUF, Quantization: quant,
		}
		st.Model = res.Model
		if st.Progress != nil && st.Progress.BytesTotal > 0 {
			st.Progress.BytesDone, st.Progress.Percent = st.Progress.BytesTotal, 100
		}
		if st.Phase != servingv1alpha1.ModelPhaseReady {
			r.event(m, corev1.EventTypeNormal, "Ready", "Prepared", "%s is ready: %s (%d bytes, sha256 %s) on claim %s", m.Name, artifactPath, res.Artifact.SizeBytes, short(res.Artifact.SHA256), claim)
		}
		st.Phase = servingv1alpha1.ModelPhaseReady
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionDownloaded, true, "Downloaded", "the source's files are downloaded and verified")
		converted, quantized := stepsDone(res.Steps, m.Spec)
		if converted {
			setCondition(&st.Conditions, gen, servingv1alpha1.ConditionConverted, true, "Converted", "converted to GGUF")
		} else {
			setCondition(&st.Conditions, gen, servingv1alpha1.ConditionConverted, true, "NotNeeded", "the source is GGUF already")
		}
		if quantized {
			setCondition(&st.Conditions, gen, servingv1alpha1.ConditionQuantized, true, "Quantized", "quantized to "+string(quant))
		} else {
			setCondition(&st.Conditions, gen, servingv1alpha1.ConditionQuantized, true, "NotRequested", "kept the weights' types (quantization: none)")
		}
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, true, "Ready", "the artifact is on claim "+claim)
		return ctrl.Result{}, nil

	case finished(job, batchv1.JobFailed):
		reason, msg := jobFailure(job, pods, "prepare")
		if st.Phase != servingv1alpha1.ModelPhaseFailed {
			r.event(m, corev1.EventTypeWarning, "Failed", "Prepare", "Job %s failed after %d attempts: %s: %s", job.Name, st.Attempts, reason, msg)
		}
		msg = fmt.Sprintf("%s (after %d attempts; fix the cause and change the spec, e.g. the credentials, to try again)", msg, st.Attempts)
		if st.Phase != servingv1alpha1.ModelPhaseFailed {
			// The step it failed in says so; later passes leave the steps be.
			setCondition(&st.Conditions, gen, stepCondition(st.Phase), false, reason, msg)
		}
		st.Phase = servingv1alpha1.ModelPhaseFailed
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, reason, msg)
		return ctrl.Result{}, nil
	}

	// Running, or waiting to be retried. The phase is what the newest line
	// of the log's tail says: a pull event means downloading, any event
	// with a phase that phase; with no line, it stays.
	phase := st.Phase
	switch phase {
	case servingv1alpha1.ModelPhaseDownloading, servingv1alpha1.ModelPhaseConverting, servingv1alpha1.ModelPhaseQuantizing:
	default:
		phase = servingv1alpha1.ModelPhaseDownloading
	}
	var pod *corev1.Pod
	for i := range pods {
		if pods[i].Status.Phase == corev1.PodRunning {
			pod = &pods[i]
			break
		}
	}
	if pod != nil {
		for _, l := range progressLines(logTail(ctx, r.Logs, pod, "prepare")) {
			if l.Phase != "" {
				phase = phaseOf(l.Phase, phase)
				continue
			}
			switch l.Event {
			case "start", "progress", "verified", "done", "retry":
				phase = servingv1alpha1.ModelPhaseDownloading
				if l.BytesTotal > 0 {
					p := &servingv1alpha1.TransferProgress{BytesDone: l.BytesDone, BytesTotal: l.BytesTotal}
					if l.Event == "start" {
						p.BytesDone = 0
					}
					p.Percent = int32(min(100, p.BytesDone*100/p.BytesTotal)) //nolint:gosec // 0..100
					st.Progress = p
				}
			}
		}
	}
	msg := "Job " + job.Name + " is running"
	reason := string(phase)
	if job.Status.Failed > 0 {
		retries := int32(3)
		if m.Spec.Download.Retries != nil {
			retries = *m.Spec.Download.Retries
		}
		fr, fm := lastPodFailure(pods, "prepare")
		reason = "Retrying"
		msg = fmt.Sprintf("attempt %d of %d; the last one failed: %s: %s", job.Status.Failed+1, retries+1, fr, fm)
	}
	st.Phase = phase
	if phase == servingv1alpha1.ModelPhaseDownloading {
		if p := st.Progress; p != nil && p.BytesTotal > 0 {
			msg += fmt.Sprintf(": %d of %d bytes (%d%%)", p.BytesDone, p.BytesTotal, p.Percent)
		}
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionDownloaded, false, reason, msg)
	} else {
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionDownloaded, true, "Downloaded", "the source's files are downloaded and verified")
		setCondition(&st.Conditions, gen, stepCondition(phase), false, reason, msg)
	}
	setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, reason, msg)
	return ctrl.Result{RequeueAfter: r.ProgressInterval}, nil
}

// finalize removes what the model made, then its finalizer.
func (r *LlamaModelReconciler) finalize(ctx context.Context, m *servingv1alpha1.LlamaModel) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(m, modelFinalizer) {
		return ctrl.Result{}, nil
	}
	// Jobs: leave a shared one to the other models, delete our own.
	var jobs batchv1.JobList
	if err := r.List(ctx, &jobs, client.InNamespace(m.Namespace), client.MatchingLabels{desired.LabelComponent: "prepare"}); err != nil {
		return ctrl.Result{}, err
	}
	for i := range jobs.Items {
		job := &jobs.Items[i]
		if !hasOwner(job, m.UID) {
			continue
		}
		var others []metav1.OwnerReference
		for _, o := range job.OwnerReferences {
			if o.UID != m.UID {
				others = append(others, o)
			}
		}
		if len(others) == 0 {
			if err := r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, err
			}
			continue
		}
		if metav1.IsControlledBy(job, m) {
			others[0].Controller = ptr(true)
		}
		patch := client.MergeFromWithOptions(job.DeepCopy(), client.MergeFromWithOptimisticLock{})
		job.OwnerReferences = others
		delete(job.Annotations, desired.GenerationAnnotation(m))
		if err := r.Patch(ctx, job, patch); err != nil {
			return ctrl.Result{}, err
		}
	}

	if m.Spec.Storage.ExistingClaim == "" {
		// The claim we made goes, and the files with it. Kubernetes keeps it
		// until the pods that mount it are gone.
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: desired.CacheClaimName(m)}}
		var have corev1.PersistentVolumeClaim
		if err := r.Get(ctx, client.ObjectKeyFromObject(pvc), &have); err == nil && metav1.IsControlledBy(&have, m) {
			if err := r.Delete(ctx, &have); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, err
			}
		}
	} else if done, err := r.cleanExistingClaim(ctx, m); err != nil || !done {
		return ctrl.Result{RequeueAfter: 2 * time.Second}, err
	}

	patch := client.MergeFromWithOptions(m.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(m, modelFinalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, m, patch))
}

// cleanExistingClaim removes the model's artifact directory from the
// existing claim it was cached on, unless another model uses the same
// directory, with a Job of `leo-runtime prune`. It reports whether it is
// done.
func (r *LlamaModelReconciler) cleanExistingClaim(ctx context.Context, m *servingv1alpha1.LlamaModel) (bool, error) {
	claim, dir := desired.CacheClaimName(m), desired.ArtifactDir(m.Spec)
	var models servingv1alpha1.LlamaModelList
	if err := r.List(ctx, &models, client.InNamespace(m.Namespace)); err != nil {
		return false, err
	}
	for i := range models.Items {
		o := &models.Items[i]
		if o.UID != m.UID && o.DeletionTimestamp.IsZero() && desired.CacheClaimName(o) == claim && desired.ArtifactDir(o.Spec) == dir {
			return true, nil // still in use: keep the files
		}
	}
	var pvc corev1.PersistentVolumeClaim
	if err := r.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: claim}, &pvc); apierrors.IsNotFound(err) {
		return true, nil // nothing left to clean
	} else if err != nil {
		return false, err
	}
	if time.Since(m.DeletionTimestamp.Time) > cleanupTimeout {
		r.event(m, corev1.EventTypeWarning, "CleanupFailed", "DeleteFiles", "could not remove %s from claim %s within %s: remove it by hand", dir, claim, cleanupTimeout)
		return true, nil
	}
	want := desired.CleanupJob(m, r.Config)
	var job batchv1.Job
	err := r.Get(ctx, client.ObjectKeyFromObject(want), &job)
	if apierrors.IsNotFound(err) {
		// The model's prepare pods may still be writing there (their Job was
		// just deleted): wait until they are gone.
		var pods corev1.PodList
		if err := r.APIReader.List(ctx, &pods, client.InNamespace(m.Namespace),
			client.MatchingLabels{desired.LabelComponent: "prepare", desired.LabelArtifact: desired.ArtifactHash(claim, dir)}); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
				return false, nil
			}
		}
		// Owned by the model being deleted, the Job goes with it.
		if err := controllerutil.SetOwnerReference(m, want, r.Scheme); err != nil {
			return false, err
		}
		if err := r.Create(ctx, want, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
			return false, err
		}
		r.event(m, corev1.EventTypeNormal, "Cleaning", "CreateJob", "started Job %s to remove %s from claim %s", want.Name, dir, claim)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	switch {
	case finished(&job, batchv1.JobComplete):
		return true, nil
	case finished(&job, batchv1.JobFailed):
		r.event(m, corev1.EventTypeWarning, "CleanupFailed", "DeleteFiles", "could not remove %s from claim %s (Job %s failed): remove it by hand", dir, claim, job.Name)
		return true, nil
	}
	return false, nil
}

// fail records a failure that no Job caused.
func (r *LlamaModelReconciler) fail(m *servingv1alpha1.LlamaModel, reason, msg string) {
	m.Status.Phase = servingv1alpha1.ModelPhaseFailed
	setCondition(&m.Status.Conditions, m.Generation, servingv1alpha1.ConditionReady, false, reason, msg)
}

func (r *LlamaModelReconciler) event(m *servingv1alpha1.LlamaModel, typ, reason, action, note string, args ...any) {
	if r.Events != nil {
		r.Events.Eventf(m, nil, typ, reason, action, note, args...)
	}
}

// SetupWithManager registers the reconciler: models, and the Jobs and
// claims they own (a shared Job wakes every model that owns it).
func (r *LlamaModelReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.ProgressInterval == 0 {
		r.ProgressInterval = 5 * time.Second
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&servingv1alpha1.LlamaModel{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, deletionPredicate()))).
		Watches(&batchv1.Job{}, handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &servingv1alpha1.LlamaModel{})).
		Owns(&corev1.PersistentVolumeClaim{}).
		Named("llamamodel").
		// Several objects at once: a reconcile mostly waits on the API server.
		WithOptions(controller.Options{MaxConcurrentReconciles: maxConcurrentReconciles}).
		Complete(r)
}

// podResult is the parsed termination message of the newest pod whose
// container ended with (succeeded) or without success.
func podResult(pods []corev1.Pod, container string, succeeded bool) (prepareResult, bool) {
	for i := range pods {
		t, ok := terminated(&pods[i], container)
		if !ok || (t.ExitCode == 0) != succeeded {
			continue
		}
		var res prepareResult
		if json.Unmarshal([]byte(t.Message), &res) == nil {
			return res, true
		}
		return prepareResult{Reason: orReason(t.Reason, "Failed"), Message: firstLine(lastLine(t.Message), 512)}, !succeeded
	}
	return prepareResult{}, false
}

// lastPodFailure is the reason and message of the newest failed pod.
func lastPodFailure(pods []corev1.Pod, container string) (string, string) {
	res, ok := podResult(pods, container, false)
	if !ok || res.Reason == "" {
		return "Failed", "the pod failed"
	}
	return res.Reason, firstLine(res.Message, 512)
}

// jobFailure says why a Job failed: the reason its last pod gave, else the
// Job's own (DeadlineExceeded, BackoffLimitExceeded).
func jobFailure(job *batchv1.Job, pods []corev1.Pod, container string) (string, string) {
	if res, ok := podResult(pods, container, false); ok && res.Reason != "" {
		return res.Reason, firstLine(res.Message, 512)
	}
	for _, c := range job.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return orReason(c.Reason, "JobFailed"), firstLine(c.Message, 512)
		}
	}
	return "JobFailed", "Job " + job.Name + " failed"
}

func finished(job *batchv1.Job, typ batchv1.JobConditionType) bool {
	for _, c := range job.Status.Conditions {
		if c.Type == typ && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// joinedAt is the generation of m when it made or joined the Job.
func joinedAt(job *batchv1.Job, m *servingv1alpha1.LlamaModel) int64 {
	g, err := strconv.ParseInt(job.Annotations[desired.GenerationAnnotation(m)], 10, 64)
	if err != nil {
		return m.Generation // not recorded: nothing to compare with
	}
	return g
}

// cleanupRunning says whether a cleanup Job is removing the files of the
// artifact directory with this hash.
func (r *LlamaModelReconciler) cleanupRunning(ctx context.Context, ns, hash string) (bool, error) {
	var jobs batchv1.JobList
	if err := r.List(ctx, &jobs, client.InNamespace(ns), client.MatchingLabels{desired.LabelComponent: "cleanup", desired.LabelArtifact: hash}); err != nil {
		return false, err
	}
	for i := range jobs.Items {
		if !finished(&jobs.Items[i], batchv1.JobComplete) && !finished(&jobs.Items[i], batchv1.JobFailed) {
			return true, nil
		}
	}
	return false, nil
}

// stepsDone says whether conversion and quantization ran, from the
// prepare result or, for an older runtime, from the spec.
func stepsDone(steps []string, spec servingv1alpha1.LlamaModelSpec) (converted, quantized bool) {
	if steps != nil {
		for _, s := range steps {
			converted = converted || s == "convert"
			quantized = quantized || s == "quantize"
		}
		return converted, quantized
	}
	converted = spec.Format == servingv1alpha1.ModelFormatSafetensors || spec.Format == servingv1alpha1.ModelFormatLlama2c
	quantized = spec.Quantization != "" && spec.Quantization != servingv1alpha1.QuantizationNone
	return converted, quantized
}

func phaseOf(p string, def servingv1alpha1.ModelPhase) servingv1alpha1.ModelPhase {
	switch p {
	case "downloading":
		return servingv1alpha1.ModelPhaseDownloading
	case "converting":
		return servingv1alpha1.ModelPhaseConverting
	case "quantizing", "inspecting":
		return servingv1alpha1.ModelPhaseQuantizing
	}
	return def
}

// stepCondition is the condition of the step a phase is in.
func stepCondition(p servingv1alpha1.ModelPhase) string {
	switch p {
	case servingv1alpha1.ModelPhaseConverting:
		return servingv1alpha1.ConditionConverted
	case servingv1alpha1.ModelPhaseQuantizing:
		return servingv1alpha1.ConditionQuantized
	}
	return servingv1alpha1.ConditionDownloaded
}

func hasOwner(o metav1.Object, uid types.UID) bool {
	for _, r := range o.GetOwnerReferences() {
		if r.UID == uid {
			return true
		}
	}
	return false
}

func ownerRef(m *servingv1alpha1.LlamaModel, controller bool) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: servingv1alpha1.GroupVersion.String(), Kind: "LlamaModel", Name: m.Name, UID: m.UID,
		Controller: ptr(controller), BlockOwnerDeletion: ptr(true),
	}
}

func controllerName(o metav1.Object) string {
	if ref := metav1.GetControllerOf(o); ref != nil {
		return ref.Kind + " " + ref.Name
	}
	return "no controller"
}

func orReason(r, def string) string {
	if r == "" {
		return def
	}
	return r
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// setCondition sets a condition of the given generation; the transition
// time changes only when the status does.
func setCondition(conds *[]metav1.Condition, gen int64, typ string, ok bool, reason, msg string) {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
}

// deletionPredicate passes updates that start a deletion (a finalizer's
// cue), which GenerationChangedPredicate does not.
func deletionPredicate() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetDeletionTimestamp().IsZero() && !e.ObjectNew.GetDeletionTimestamp().IsZero()
	}}
}

func asNotOurs(err error, target *errNotOurs) bool {
	e, ok := err.(errNotOurs) //nolint:errorlint // made here, never wrapped
	if ok {
		*target = e
	}
	return ok
}
