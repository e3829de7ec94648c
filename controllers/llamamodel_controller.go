package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

// LlamaModelReconciler will download and quantize models (operator issue).
// Today it only acknowledges them in status.
type LlamaModelReconciler struct {
	client.Client
	Scheme *runtime.Scheme
}

// +kubebuilder:rbac:groups=serving.leo.dev,resources=llamamodels,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=llamamodels/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=llamamodels/finalizers,verbs=update

// Reconcile records the observed generation, phase Pending and a Ready=False
// NotImplemented condition.
func (r *LlamaModelReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var m servingv1alpha1.LlamaModel
	if err := r.Get(ctx, req.NamespacedName, &m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := m.DeepCopy()
	m.Status.ObservedGeneration = m.Generation
	if m.Status.Phase == "" {
		m.Status.Phase = servingv1alpha1.ModelPhasePending
	}
	meta.SetStatusCondition(&m.Status.Conditions, notImplementedCondition(m.Generation, "download models"))
	if equalStatus(before.Status, m.Status) {
		return ctrl.Result{}, nil
	}
	log.FromContext(ctx).V(1).Info("acknowledged", "phase", m.Status.Phase)
	return ctrl.Result{}, r.Status().Patch(ctx, &m, client.MergeFrom(before))
}

// SetupWithManager registers the reconciler with the manager.
func (r *LlamaModelReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&servingv1alpha1.LlamaModel{}).
		Named("llamamodel").
		Complete(r)
}
