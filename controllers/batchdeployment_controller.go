package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

// BatchDeploymentReconciler will run batch scoring jobs (operator issue).
// Today it only acknowledges them in status. It does not set
// status.startTime: no run has started, so the spec stays editable.
type BatchDeploymentReconciler struct {
	client.Client
	Scheme *runtime.Scheme
}

// +kubebuilder:rbac:groups=serving.leo.dev,resources=batchdeployments,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=batchdeployments/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=batchdeployments/finalizers,verbs=update

// Reconcile records the observed generation, phase Pending and a Ready=False
// NotImplemented condition.
func (r *BatchDeploymentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var b servingv1alpha1.BatchDeployment
	if err := r.Get(ctx, req.NamespacedName, &b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := b.DeepCopy()
	b.Status.ObservedGeneration = b.Generation
	if b.Status.Phase == "" {
		b.Status.Phase = servingv1alpha1.BatchPhasePending
	}
	meta.SetStatusCondition(&b.Status.Conditions, notImplementedCondition(b.Generation, "run batch jobs"))
	if equalStatus(before.Status, b.Status) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.Status().Patch(ctx, &b, client.MergeFrom(before))
}

// SetupWithManager registers the reconciler with the manager.
func (r *BatchDeploymentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&servingv1alpha1.BatchDeployment{}).
		Named("batchdeployment").
		Complete(r)
}
