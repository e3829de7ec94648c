package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
)

// OnlineEndpointReconciler will run the runtime pods of endpoints (operator
// issue). Today it only acknowledges them in status.
type OnlineEndpointReconciler struct {
	client.Client
	Scheme *runtime.Scheme
}

// +kubebuilder:rbac:groups=serving.leo.dev,resources=onlineendpoints,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=onlineendpoints/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=onlineendpoints/finalizers,verbs=update

// Reconcile records the observed generation and a Ready=False
// NotImplemented condition.
func (r *OnlineEndpointReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var e servingv1alpha1.OnlineEndpoint
	if err := r.Get(ctx, req.NamespacedName, &e); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := e.DeepCopy()
	e.Status.ObservedGeneration = e.Generation
	meta.SetStatusCondition(&e.Status.Conditions, notImplementedCondition(e.Generation, "serve endpoints"))
	if equalStatus(before.Status, e.Status) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.Status().Patch(ctx, &e, client.MergeFrom(before))
}

// SetupWithManager registers the reconciler with the manager.
func (r *OnlineEndpointReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&servingv1alpha1.OnlineEndpoint{}).
		Named("onlineendpoint").
		Complete(r)
}
