// Package controllers holds one reconciler per leo kind. Each observes,
// computes the objects it wants with the pure functions of package desired,
// applies them (server-side apply, and only when they differ: a steady
// state makes no API write), then writes status with conditions.
package controllers

import (
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leo-operator/leo/controllers/autoscale"
	"github.com/leo-operator/leo/controllers/desired"
)

// maxConcurrentReconciles is how many objects of a kind are reconciled at
// once (never the same object twice at once).
const maxConcurrentReconciles = 4

// Options configure the reconcilers.
type Options struct {
	// Config is what every object made depends on: the runtime image, the
	// cluster domain.
	Config desired.Config
	// ProgressInterval is how often the progress of a running Job is read
	// from its pods' logs; 0 means 5 seconds.
	ProgressInterval time.Duration
	// GatewayNamespace is where leo-gateway's pods run, whose metrics the
	// autoscaler reads; empty: leo-system.
	GatewayNamespace string
}

// equalStatus reports whether two statuses are the same, so a reconcile that
// changes nothing writes nothing.
func equalStatus(a, b any) bool {
	return equality.Semantic.DeepEqual(a, b)
}

// SetupAll registers the three reconcilers and the autoscaler with mgr.
func SetupAll(mgr ctrl.Manager, o Options) error {
	logs, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	c, s := mgr.GetClient(), mgr.GetScheme()
	a := applier{Client: c, scheme: s, reader: mgr.GetAPIReader()}
	events := mgr.GetEventRecorder("leo-operator")
	if err := (&LlamaModelReconciler{
		Client: c, Scheme: s, APIReader: mgr.GetAPIReader(), Logs: logs, Events: events,
		Config: o.Config, ProgressInterval: o.ProgressInterval,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("LlamaModel controller: %w", err)
	}
	if err := (&OnlineEndpointReconciler{applier: a, Events: events, Config: o.Config}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("OnlineEndpoint controller: %w", err)
	}
	if err := (&BatchDeploymentReconciler{
		applier: a, APIReader: mgr.GetAPIReader(), Logs: logs, Events: events,
		Config: o.Config, ProgressInterval: o.ProgressInterval,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("BatchDeployment controller: %w", err)
	}
	gwNS := o.GatewayNamespace
	if gwNS == "" {
		gwNS = "leo-system"
	}
	if err := mgr.Add(&autoscale.Autoscaler{Client: c, Log: mgr.GetLogger().WithName("autoscaler"), GatewayNamespace: gwNS}); err != nil {
		return fmt.Errorf("autoscaler: %w", err)
	}
	return nil
}

// CacheOptions restrict the manager's cache of Secrets, Deployments,
// Services and Jobs to the ones the operator made (they all carry
// app.kubernetes.io/managed-by: leo-operator), so that it neither holds
// every Secret of the cluster in memory nor wakes for every Deployment.
// Claims are cached whole: a model may name an existing one. Pods are
// cached when they are the runtime's or the gateway's.
func CacheOptions() cache.Options {
	ours := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{desired.LabelManagedBy: desired.ManagedBy})}
	// Pods: the runtime's (the autoscaler counts ready and pending ones
	// and reads their metrics) and the gateway's (their metrics).
	podNames, err := labels.NewRequirement(desired.LabelName, selection.In, []string{"leo-runtime", autoscale.GatewayName})
	if err != nil {
		panic(err) // constant arguments
	}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:     ours,
		&appsv1.Deployment{}: ours,
		&corev1.Service{}:    ours,
		&batchv1.Job{}:       ours,
		&corev1.Pod{}:        {Label: labels.NewSelector().Add(*podNames)},
	}}
}
