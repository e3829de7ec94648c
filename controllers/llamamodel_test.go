package controllers_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
)

// A model from the Hub goes through the Job's phases to Ready, with
// progress read from the pod's log and the result from its termination
// message; deleting it removes its Job and claim.
func TestModelDownloadToReady(t *testing.T) {
	ns := namespace(t)
	size := resource.MustParse("40Gi")
	m := &servingv1alpha1.LlamaModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "llama-2-7b"},
		Spec: servingv1alpha1.LlamaModelSpec{
			Source: servingv1alpha1.ModelSource{
				URI: "hf://meta-llama/Llama-2-7b-hf@main", CredentialsSecretRef: &corev1.LocalObjectReference{Name: "hf-token"},
			},
			Format: servingv1alpha1.ModelFormatSafetensors, Quantization: servingv1alpha1.QuantizationQ4_0,
			Storage: servingv1alpha1.ModelStorage{Size: &size},
		},
	}
	create(t, m)

	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "llama-2-7b-cache"}}
	eventually(t, "the cache claim", func() error { return get(pvc) })
	if !metav1.IsControlledBy(pvc, mustGet(t, m)) || pvc.Spec.Resources.Requests.Storage().String() != "40Gi" {
		t.Errorf("claim %+v: want 40Gi, controlled by the model", pvc.Spec)
	}
	job := jobOf(t, ns, desired.PrepareJobName(pvc.Name, desired.ArtifactDir(m.Spec)))
	args := strings.Join(job.Spec.Template.Spec.Containers[0].Args, " ")
	for _, want := range []string{"prepare --source hf://meta-llama/Llama-2-7b-hf@main", "--quantization q4_0", "--format safetensors"} {
		if !strings.Contains(args, want) {
			t.Errorf("Job args %q lack %q", args, want)
		}
	}
	if job.Spec.Template.Spec.Containers[0].Image != runtimeImage || *job.Spec.BackoffLimit != 3 {
		t.Errorf("Job image %s, backoffLimit %d", job.Spec.Template.Spec.Containers[0].Image, *job.Spec.BackoffLimit)
	}
	eventually(t, "phase Downloading", func() error { return wantPhase(m, servingv1alpha1.ModelPhaseDownloading) })

	// The pod runs and logs progress: the status follows.
	jobStatus(t, job, 1, 0)
	pod := runPod(t, job, job.Name+"-abcde", "prepare",
		`{"event":"phase","phase":"downloading"}`+"\n"+
			`{"event":"start","files":3,"bytes_total":13476839424}`+"\n"+
			`{"event":"progress","bytes_done":3369209856,"bytes_total":13476839424,"rate_bytes_per_second":5.4e8}`+"\n", nil)
	eventually(t, "progress 25%", func() error {
		if err := get(m); err != nil {
			return err
		}
		p := m.Status.Progress
		if p == nil || p.BytesDone != 3369209856 || p.BytesTotal != 13476839424 || p.Percent != 25 {
			return fmt.Errorf("progress %+v", p)
		}
		return wantCondition(m.Status.Conditions, servingv1alpha1.ConditionDownloaded, metav1.ConditionFalse, "Downloading")
	})
	if kubelet.RequestCount(ns, pod.Name) == 0 {
		t.Error("the operator did not read the pod's log through the API server")
	}
	kubelet.AppendLog(ns, pod.Name, "prepare", `{"event":"done","files":3,"bytes_done":13476839424}`+"\n"+
		`{"event":"phase","phase":"converting","format":"safetensors"}`+"\n")
	eventually(t, "phase Converting", func() error {
		if err := wantPhase(m, servingv1alpha1.ModelPhaseConverting); err != nil {
			return err
		}
		return wantCondition(m.Status.Conditions, servingv1alpha1.ConditionDownloaded, metav1.ConditionTrue, "Downloaded")
	})
	kubelet.AppendLog(ns, pod.Name, "prepare", `{"event":"phase","phase":"quantizing","quantization":"q4_0"}`+"\n"+
		`{"event":"progress","phase":"quantizing","bytes_done":100,"bytes_total":200}`+"\n")
	eventually(t, "phase Quantizing", func() error { return wantPhase(m, servingv1alpha1.ModelPhaseQuantizing) })

	endPod(t, pod, 0, strings.NewReplacer(`"steps":["download","quantize"]`, `"steps":["download","convert","quantize"]`,
		`"quantization":"q8_0"`, `"quantization":"q4_0"`).Replace(resultJSON))
	jobDone(t, job, true, "CompletionsReached")
	eventually(t, "Ready", func() error {
		if err := wantPhase(m, servingv1alpha1.ModelPhaseReady); err != nil {
			return err
		}
		a := m.Status.Artifact
		if a == nil || a.Path != desired.ArtifactPath(m.Spec) || a.ClaimName != pvc.Name || a.SizeBytes != 7161089728 || a.Quantization != "q4_0" || len(a.SHA256) != 64 {
			return fmt.Errorf("artifact %+v", a)
		}
		if f := m.Status.Model; f == nil || f.ParameterCount != 6738415616 || f.Layers != 32 || f.ContextLength != 4096 {
			return fmt.Errorf("model facts %+v", f)
		}
		for typ, reason := range map[string]string{
			servingv1alpha1.ConditionDownloaded: "Downloaded", servingv1alpha1.ConditionConverted: "Converted",
			servingv1alpha1.ConditionQuantized: "Quantized", servingv1alpha1.ConditionReady: "Ready",
		} {
			if err := wantCondition(m.Status.Conditions, typ, metav1.ConditionTrue, reason); err != nil {
				return err
			}
		}
		if m.Status.ObservedGeneration != m.Generation || m.Status.Attempts != 1 {
			return fmt.Errorf("observedGeneration %d of %d, attempts %d", m.Status.ObservedGeneration, m.Generation, m.Status.Attempts)
		}
		return nil
	})
	hasEvent(t, ns, m.Name, "Downloading")
	hasEvent(t, ns, m.Name, "Ready")

	// Deleted: the finalizer removes the Job and the claim, then the model goes.
	if err := k8s.Delete(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the model gone", func() error { return gone(m) })
	eventually(t, "its Job gone", func() error { return gone(job) })
	eventually(t, "its claim deleted", func() error {
		if err := get(pvc); apierrors.IsNotFound(err) || (err == nil && !pvc.DeletionTimestamp.IsZero()) {
			return nil
		}
		return fmt.Errorf("claim %s still there", pvc.Name)
	})
}

// Two models with the same source and quantization on one claim share one
// Job; each one's deletion leaves the other's download alone, and the last
// one removes the files from the existing claim with a cleanup Job.
func TestSharedDownload(t *testing.T) {
	ns := namespace(t)
	create(t, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shared-cache"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("100Gi")}},
		},
	})
	model := func(name string) *servingv1alpha1.LlamaModel {
		return &servingv1alpha1.LlamaModel{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: servingv1alpha1.LlamaModelSpec{
				Source:  servingv1alpha1.ModelSource{URI: "hf://TheBloke/Llama-2-7B-Chat-GGUF", Files: []string{"llama-2-7b-chat.Q8_0.gguf"}},
				Format:  servingv1alpha1.ModelFormatGGUF,
				Storage: servingv1alpha1.ModelStorage{ExistingClaim: "shared-cache"},
			},
		}
	}
	a, b := model("team-a-chat"), model("team-b-chat")
	create(t, a)
	job := jobOf(t, ns, desired.PrepareJobName("shared-cache", desired.ArtifactDir(a.Spec)))
	create(t, b)
	eventually(t, "the Job owned by both models", func() error {
		if err := get(job); err != nil {
			return err
		}
		if len(job.OwnerReferences) != 2 {
			return fmt.Errorf("owners %+v", job.OwnerReferences)
		}
		return nil
	})
	var jobs batchv1.JobList
	if err := k8s.List(context.Background(), &jobs); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, j := range jobs.Items {
		if j.Namespace == ns {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d Jobs for two models of the same weights, want 1", n)
	}
	hasEvent(t, ns, b.Name, "SharedDownload")

	pod := runPod(t, job, job.Name+"-x", "prepare", "", nil)
	endPod(t, pod, 0, resultJSON)
	jobDone(t, job, true, "CompletionsReached")
	for _, m := range []*servingv1alpha1.LlamaModel{a, b} {
		eventually(t, m.Name+" Ready", func() error {
			if err := wantPhase(m, servingv1alpha1.ModelPhaseReady); err != nil {
				return err
			}
			if m.Status.Artifact.ClaimName != "shared-cache" || m.Status.Artifact.Path != desired.ArtifactPath(a.Spec) {
				return fmt.Errorf("artifact %+v", m.Status.Artifact)
			}
			return wantCondition(m.Status.Conditions, servingv1alpha1.ConditionConverted, metav1.ConditionTrue, "NotNeeded")
		})
	}

	// a goes: the Job stays for b, now its controller; no files are removed.
	if err := k8s.Delete(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a gone", func() error { return gone(a) })
	if err := get(job); err != nil {
		t.Fatalf("the shared Job went with one of its two models: %v", err)
	}
	if len(job.OwnerReferences) != 1 || job.OwnerReferences[0].Name != b.Name || !*job.OwnerReferences[0].Controller {
		t.Errorf("owners after a's deletion: %+v", job.OwnerReferences)
	}
	cleanup := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: desired.CleanupJob(b, desired.Config{}).Name}}
	if err := get(cleanup); !apierrors.IsNotFound(err) {
		t.Errorf("a cleanup Job while b still uses the files: %v", err)
	}

	// b goes: the Job goes, and a cleanup Job removes the files from the
	// claim (which stays: it is not the operator's).
	if err := k8s.Delete(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cleanup Job", func() error { return get(cleanup) })
	args := cleanup.Spec.Template.Spec.Containers[0].Args
	if !slices.Equal(args[:3], []string{"prune", "--root", "/models"}) || args[3] != "/models/"+desired.ArtifactDir(b.Spec) {
		t.Errorf("cleanup args %q", args)
	}
	if err := get(b); err != nil {
		t.Fatalf("b went before its files were cleaned: %v", err)
	}
	jobDone(t, cleanup, true, "CompletionsReached")
	eventually(t, "b gone", func() error { return gone(b) })
	eventually(t, "the shared Job gone", func() error { return gone(job) })
	if err := get(&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shared-cache"}}); err != nil {
		t.Errorf("the existing claim must stay: %v", err)
	}
}

// A failed attempt is retried (the Job's backoff) and said so; a failure
// that retrying cannot help fails the model with the pod's reason; a change
// of the spec starts again.
func TestModelRetryThenFailed(t *testing.T) {
	ns := namespace(t)
	m := &servingv1alpha1.LlamaModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gated"},
		Spec: servingv1alpha1.LlamaModelSpec{
			Source:   servingv1alpha1.ModelSource{URI: "hf://meta-llama/Llama-2-7b-hf"},
			Download: servingv1alpha1.DownloadSettings{Retries: ptr(int32(2))},
		},
	}
	create(t, m)
	job := jobOf(t, ns, desired.PrepareJobName(desired.CacheClaimName(m), desired.ArtifactDir(m.Spec)))
	if *job.Spec.BackoffLimit != 2 {
		t.Errorf("backoffLimit %d, want the spec's retries (2)", *job.Spec.BackoffLimit)
	}
	first := runPod(t, job, job.Name+"-1", "prepare", "", nil)
	endPod(t, first, 1, `{"reason":"DownloadFailed","message":"connection reset by peer after 3 retries"}`)
	runPod(t, job, job.Name+"-2", "prepare", `{"event":"phase","phase":"downloading"}`+"\n", nil)
	jobStatus(t, job, 1, 1)
	eventually(t, "Retrying", func() error {
		if err := get(m); err != nil {
			return err
		}
		c := condition(m.Status.Conditions, servingv1alpha1.ConditionDownloaded)
		if c == nil || c.Reason != "Retrying" || !strings.Contains(c.Message, "attempt 2 of 3") || !strings.Contains(c.Message, "DownloadFailed: connection reset") {
			return fmt.Errorf("Downloaded condition %+v", c)
		}
		if m.Status.Attempts != 2 || m.Status.Phase != servingv1alpha1.ModelPhaseDownloading {
			return fmt.Errorf("attempts %d, phase %s", m.Status.Attempts, m.Status.Phase)
		}
		return nil
	})

	second := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: job.Name + "-2"}}
	endPod(t, mustGetPod(t, second), desired.PrepareExitPermanent, `{"reason":"Unauthorized","message":"hf://meta-llama/Llama-2-7b-hf: 401 Unauthorized: the repository is gated; set HF_TOKEN"}`)
	jobStatus(t, job, 0, 2)
	jobDone(t, job, false, "PodFailurePolicy")
	eventually(t, "Failed with the pod's reason", func() error {
		if err := wantPhase(m, servingv1alpha1.ModelPhaseFailed); err != nil {
			return err
		}
		if err := wantCondition(m.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "Unauthorized"); err != nil {
			return err
		}
		if c := condition(m.Status.Conditions, servingv1alpha1.ConditionReady); !strings.Contains(c.Message, "set HF_TOKEN") {
			return fmt.Errorf("message %q", c.Message)
		}
		return nil
	})
	hasEvent(t, ns, m.Name, "Failed")

	// New credentials: a new Job.
	old := job.UID
	update(t, m, func(m *servingv1alpha1.LlamaModel) {
		m.Spec.Source.CredentialsSecretRef = &corev1.LocalObjectReference{Name: "hf-token"}
	})
	eventually(t, "a new Job", func() error {
		if err := get(job); err != nil {
			return err
		}
		if job.UID == old {
			return fmt.Errorf("still the failed Job")
		}
		if len(job.Spec.Template.Spec.Containers[0].EnvFrom) != 1 {
			return fmt.Errorf("the new Job does not use the credentials")
		}
		return wantPhase(m, servingv1alpha1.ModelPhaseDownloading)
	})
}

// A model on an existing claim that does not exist waits and says why.
func TestModelExistingClaimMissing(t *testing.T) {
	ns := namespace(t)
	m := &servingv1alpha1.LlamaModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nowhere"},
		Spec: servingv1alpha1.LlamaModelSpec{
			Source:  servingv1alpha1.ModelSource{URI: "https://models.example/m.gguf"},
			Storage: servingv1alpha1.ModelStorage{ExistingClaim: "not-there"},
		},
	}
	create(t, m)
	eventually(t, "ClaimNotFound", func() error {
		if err := get(m); err != nil {
			return err
		}
		return wantCondition(m.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "ClaimNotFound")
	})
}

func wantPhase(m *servingv1alpha1.LlamaModel, p servingv1alpha1.ModelPhase) error {
	if err := get(m); err != nil {
		return err
	}
	if m.Status.Phase != p {
		c := condition(m.Status.Conditions, servingv1alpha1.ConditionReady)
		return fmt.Errorf("phase %q (Ready: %+v), want %q", m.Status.Phase, c, p)
	}
	return nil
}

// gone says whether an object no longer exists.
func gone(o client.Object) error {
	err := get(o)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%s still there (deleting: %v, finalizers %v)", o.GetName(), !o.GetDeletionTimestamp().IsZero(), o.GetFinalizers())
}

func mustGet(t *testing.T, m *servingv1alpha1.LlamaModel) *servingv1alpha1.LlamaModel {
	t.Helper()
	if err := get(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustGetPod(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	if err := get(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// A long quantization keeps its phase when its phase line has scrolled out
// of the log's tail; a failure while quantizing says so in Quantized and
// leaves Downloaded true.
func TestModelQuantizeLongLogThenFail(t *testing.T) {
	ns := namespace(t)
	m := &servingv1alpha1.LlamaModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "big"},
		Spec: servingv1alpha1.LlamaModelSpec{
			Source:       servingv1alpha1.ModelSource{URI: "https://models.example/big.gguf"},
			Quantization: servingv1alpha1.QuantizationQ4_0,
			Download:     servingv1alpha1.DownloadSettings{Retries: ptr(int32(0))},
		},
	}
	create(t, m)
	job := jobOf(t, ns, desired.PrepareJobName(desired.CacheClaimName(m), desired.ArtifactDir(m.Spec)))
	jobStatus(t, job, 1, 0)
	var log strings.Builder
	log.WriteString(`{"event":"phase","phase":"downloading"}` + "\n" + `{"event":"done","files":1,"bytes_done":100}` + "\n")
	log.WriteString(`{"event":"phase","phase":"quantizing","quantization":"q4_0"}` + "\n")
	for i := range 100 { // a line a second for 100 s: the phase line is long gone from the tail
		fmt.Fprintf(&log, `{"event":"progress","phase":"quantizing","bytes_done":%d,"bytes_total":1000}`+"\n", i*10)
	}
	pod := runPod(t, job, job.Name+"-1", "prepare", log.String(), nil)
	eventually(t, "Quantizing", func() error {
		if err := wantPhase(m, servingv1alpha1.ModelPhaseQuantizing); err != nil {
			return err
		}
		return wantCondition(m.Status.Conditions, servingv1alpha1.ConditionDownloaded, metav1.ConditionTrue, "Downloaded")
	})
	endPod(t, pod, desired.PrepareExitPermanent, `{"reason":"Unsupported","message":"q4_0 of a tensor of 13 columns"}`)
	jobStatus(t, job, 0, 1)
	jobDone(t, job, false, "PodFailurePolicy")
	eventually(t, "Failed in Quantized", func() error {
		if err := wantPhase(m, servingv1alpha1.ModelPhaseFailed); err != nil {
			return err
		}
		if err := wantCondition(m.Status.Conditions, servingv1alpha1.ConditionQuantized, metav1.ConditionFalse, "Unsupported"); err != nil {
			return err
		}
		return wantCondition(m.Status.Conditions, servingv1alpha1.ConditionDownloaded, metav1.ConditionTrue, "Downloaded")
	})
	// Another pass (a label changed, say) leaves the conditions as they are.
	before := mustGet(t, m).Status.Conditions
	update(t, m, func(m *servingv1alpha1.LlamaModel) { m.Labels = map[string]string{"touched": "yes"} })
	update(t, job, func(j *batchv1.Job) { j.Labels["touched"] = "yes" }) // wakes the model's reconciler
	time.Sleep(time.Second)
	if after := mustGet(t, m).Status.Conditions; !reflect.DeepEqual(before, after) {
		t.Errorf("conditions changed on a pass with nothing new:\nbefore %+v\nafter  %+v", before, after)
	}
}
