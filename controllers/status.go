// Package controllers holds one reconciler per leo kind.
//
// Until the operator issue lands, each reconciler only acknowledges its
// objects: it records the generation it saw and says, in a Ready=False
// condition with reason NotImplemented, that this build does not act on them
// yet. It never claims progress it did not make.
package controllers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

// notImplementedCondition is the Ready condition of an object this build
// accepts but does not act on yet. what says what it would do.
func notImplementedCondition(generation int64, what string) metav1.Condition {
	return metav1.Condition{
		Type:               servingv1alpha1.ConditionReady,
		Status:             metav1.ConditionFalse,
		Reason:             servingv1alpha1.ReasonNotImplemented,
		Message:            "accepted, but this build of leo does not " + what + " yet",
		ObservedGeneration: generation,
	}
}

// equalStatus reports whether two statuses are the same, so a reconcile that
// changes nothing writes nothing.
func equalStatus(a, b any) bool {
	return equality.Semantic.DeepEqual(a, b)
}

// SetupAll registers the three reconcilers with mgr.
func SetupAll(mgr ctrl.Manager) error {
	c, s := mgr.GetClient(), mgr.GetScheme()
	if err := (&LlamaModelReconciler{Client: c, Scheme: s}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("LlamaModel controller: %w", err)
	}
	if err := (&OnlineEndpointReconciler{Client: c, Scheme: s}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("OnlineEndpoint controller: %w", err)
	}
	if err := (&BatchDeploymentReconciler{Client: c, Scheme: s}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("BatchDeployment controller: %w", err)
	}
	return nil
}
