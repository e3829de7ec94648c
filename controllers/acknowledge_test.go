package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

// Until the operator issue lands, the reconcilers must say truthfully that
// they do nothing yet: Ready=False with reason NotImplemented, for the
// generation they saw, and no progress, artifact, URI or start time.

type statusView struct {
	generation, observed int64
	conditions           []metav1.Condition
}

func checkAcknowledged(v statusView) error {
	if v.observed != v.generation {
		return fmt.Errorf("observedGeneration %d, want %d", v.observed, v.generation)
	}
	c := meta.FindStatusCondition(v.conditions, servingv1alpha1.ConditionReady)
	if c == nil {
		return fmt.Errorf("no Ready condition in %+v", v.conditions)
	}
	if c.Status != metav1.ConditionFalse || c.Reason != servingv1alpha1.ReasonNotImplemented || c.ObservedGeneration != v.generation {
		return fmt.Errorf("Ready condition %+v, want False/NotImplemented at generation %d", *c, v.generation)
	}
	return nil
}

func TestLlamaModelIsAcknowledgedHonestly(t *testing.T) {
	ctx := context.Background()
	m := &servingv1alpha1.LlamaModel{
		ObjectMeta: metav1.ObjectMeta{Name: "llama", Namespace: "default"},
		Spec: servingv1alpha1.LlamaModelSpec{
			Source: servingv1alpha1.ModelSource{URI: "hf://meta-llama/Llama-2-7b-hf"},
		},
	}
	if err := k8s.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	var got servingv1alpha1.LlamaModel
	get := func() error { return k8s.Get(ctx, client.ObjectKeyFromObject(m), &got) }
	eventually(t, "LlamaModel acknowledged", func() error {
		if err := get(); err != nil {
			return err
		}
		if got.Status.Phase != servingv1alpha1.ModelPhasePending {
			return fmt.Errorf("phase %q, want Pending", got.Status.Phase)
		}
		return checkAcknowledged(statusView{got.Generation, got.Status.ObservedGeneration, got.Status.Conditions})
	})
	if got.Status.Progress != nil || got.Status.Artifact != nil || got.Status.Model != nil {
		t.Errorf("status claims work that was not done: %+v", got.Status)
	}

	// A new generation is observed too.
	got.Spec.Quantization = servingv1alpha1.QuantizationQ8_0
	if err := k8s.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new generation observed", func() error {
		if err := get(); err != nil {
			return err
		}
		return checkAcknowledged(statusView{got.Generation, got.Status.ObservedGeneration, got.Status.Conditions})
	})
	if got.Generation != 2 {
		t.Errorf("generation %d after one spec change, want 2", got.Generation)
	}
	assertNoStatusChurn(t, &got)
}

// assertNoStatusChurn checks that a settled object is not rewritten: a
// reconciler that writes status on every pass would loop forever.
func assertNoStatusChurn(t *testing.T, obj client.Object) {
	t.Helper()
	rv := obj.GetResourceVersion()
	time.Sleep(time.Second)
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	if obj.GetResourceVersion() != rv {
		t.Errorf("object rewritten without a change: resourceVersion %s -> %s", rv, obj.GetResourceVersion())
	}
}

func TestOnlineEndpointIsAcknowledgedHonestly(t *testing.T) {
	ctx := context.Background()
	e := &servingv1alpha1.OnlineEndpoint{
		ObjectMeta: metav1.ObjectMeta{Name: "chat", Namespace: "default"},
		Spec: servingv1alpha1.OnlineEndpointSpec{
			Deployments: []servingv1alpha1.EndpointDeployment{{Name: "blue", Model: "llama"}},
			Traffic:     map[string]int32{"blue": 100},
		},
	}
	if err := k8s.Create(ctx, e); err != nil {
		t.Fatal(err)
	}
	var got servingv1alpha1.OnlineEndpoint
	eventually(t, "OnlineEndpoint acknowledged", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(e), &got); err != nil {
			return err
		}
		return checkAcknowledged(statusView{got.Generation, got.Status.ObservedGeneration, got.Status.Conditions})
	})
	if got.Status.ScoringURI != "" || got.Status.KeysSecretName != "" || len(got.Status.Deployments) != 0 {
		t.Errorf("status claims an endpoint that does not exist: %+v", got.Status)
	}
	assertNoStatusChurn(t, &got)
}

func TestBatchDeploymentIsAcknowledgedHonestly(t *testing.T) {
	ctx := context.Background()
	b := &servingv1alpha1.BatchDeployment{
		ObjectMeta: metav1.ObjectMeta{Name: "score", Namespace: "default"},
		Spec: servingv1alpha1.BatchDeploymentSpec{
			Model:  "llama",
			Input:  servingv1alpha1.BatchInput{URI: "pvc://data/in"},
			Output: servingv1alpha1.BatchOutput{URI: "pvc://data/out"},
		},
	}
	if err := k8s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	var got servingv1alpha1.BatchDeployment
	eventually(t, "BatchDeployment acknowledged", func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(b), &got); err != nil {
			return err
		}
		if got.Status.Phase != servingv1alpha1.BatchPhasePending {
			return fmt.Errorf("phase %q, want Pending", got.Status.Phase)
		}
		return checkAcknowledged(statusView{got.Generation, got.Status.ObservedGeneration, got.Status.Conditions})
	})
	if got.Status.StartTime != nil || got.Status.Progress != nil || got.Status.JobName != "" {
		t.Errorf("status claims a run that did not start: %+v", got.Status)
	}
	// No run started, so the spec may still change.
	got.Spec.Model = "other"
	if err := k8s.Update(ctx, &got); err != nil {
		t.Errorf("changing a batch that never started: %v", err)
	}
}
