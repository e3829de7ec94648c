package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
)

// FieldOwner is the field manager of the gateway's writes (a deployment's
// replicas, when it wakes it from zero).
const FieldOwner = "leo-gateway"

// settle is how long the source waits after a change before it rebuilds
// the table, so that a burst of changes (a rollout) costs one rebuild.
const settle = 20 * time.Millisecond

// Source keeps a Gateway's endpoints in step with the cluster: it watches
// OnlineEndpoints, the operator's keys Secrets, Deployments and runtime
// Pods, and wakes deployments from zero through their scale subresource.
type Source struct {
	cache  cache.Cache
	client client.Client
	g      *Gateway
	log    *slog.Logger
	poke   chan struct{}
}

// NewSource makes a Source for g from a cluster's rest config. It watches
// only what the operator made (by its managed-by label).
func NewSource(cfg *rest.Config, g *Gateway, log *slog.Logger) (*Source, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := servingv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	managed := labels.SelectorFromSet(labels.Set{desired.LabelManagedBy: desired.ManagedBy})
	c, err := cache.New(cfg, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:        {Label: managed},
		&corev1.Secret{}:     {Label: managed},
		&appsv1.Deployment{}: {Label: managed},
	}})
	if err != nil {
		return nil, err
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Source{cache: c, client: cl, g: g, log: log, poke: make(chan struct{}, 1)}, nil
}

// Run watches until ctx ends. The gateway is ready (its /readyz) once the
// first table is built.
func (s *Source) Run(ctx context.Context) error {
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.changed() },
		UpdateFunc: func(any, any) { s.changed() },
		DeleteFunc: func(any) { s.changed() },
	}
	for _, obj := range []client.Object{&servingv1alpha1.OnlineEndpoint{}, &corev1.Pod{}, &corev1.Secret{}, &appsv1.Deployment{}} {
		inf, err := s.cache.GetInformer(ctx, obj)
		if err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- s.cache.Start(ctx) }()
	if !s.cache.WaitForCacheSync(ctx) {
		select {
		case err := <-errc:
			return fmt.Errorf("watching the cluster: %w", err)
		default:
			return ctx.Err()
		}
	}
	s.changed()
	for {
		select {
		case <-ctx.Done():
			return <-errc
		case <-s.poke:
		}
		select { // let a burst of changes land
		case <-ctx.Done():
			return <-errc
		case <-time.After(settle):
		}
		eps, err := s.endpoints(ctx)
		if err != nil {
			s.log.Error("reading endpoints from the cache failed", "err", err)
			continue
		}
		s.g.SetEndpoints(eps)
	}
}

func (s *Source) changed() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// endpoints builds the table from the cache.
func (s *Source) endpoints(ctx context.Context) ([]Endpoint, error) {
	var oes servingv1alpha1.OnlineEndpointList
	if err := s.cache.List(ctx, &oes); err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := s.cache.List(ctx, &pods, client.MatchingLabels{desired.LabelComponent: "online"}); err != nil {
		return nil, err
	}
	// ready pods by namespace, endpoint label and deployment
	ready := map[[3]string][]string{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if addr, ok := desired.ReadyPodAddr(p); ok {
			k := [3]string{p.Namespace, p.Labels[desired.LabelEndpoint], p.Labels[desired.LabelDeployment]}
			ready[k] = append(ready[k], addr)
		}
	}
	out := make([]Endpoint, 0, len(oes.Items))
	for i := range oes.Items {
		oe := &oes.Items[i]
		ep := Endpoint{Namespace: oe.Namespace, Name: oe.Name, Open: oe.Spec.AuthMode == servingv1alpha1.AuthModeNone}
		if !ep.Open {
			var sec corev1.Secret
			err := s.cache.Get(ctx, client.ObjectKey{Namespace: oe.Namespace, Name: desired.KeysSecretName(oe)}, &sec)
			switch {
			case err == nil:
				for _, k := range []string{desired.PrimaryKey, desired.SecondaryKey} {
					if v := string(sec.Data[k]); v != "" {
						ep.Keys = append(ep.Keys, v)
					}
				}
			case !apierrors.IsNotFound(err):
				return nil, err
			}
		}
		traffic := oe.Spec.Traffic
		if primary := desired.PrimaryDeployment(oe); len(traffic) == 0 && primary != "" {
			traffic = map[string]int32{primary: 100}
		}
		endpointLabel := desired.EndpointSelector(oe)[desired.LabelEndpoint]
		for _, d := range oe.Spec.Deployments {
			dep := Deployment{
				Name: d.Name, Traffic: traffic[d.Name], Mirror: oe.Spec.MirrorTraffic[d.Name],
				Timeout:                  time.Duration(d.RequestSettings.RequestTimeoutMs) * time.Millisecond,
				MaxConcurrentPerInstance: int(d.RequestSettings.MaxConcurrentRequestsPerInstance),
				Wakeable: d.ScaleSettings.Type == servingv1alpha1.ScaleTypeTargetUtilization &&
					d.ScaleSettings.MinInstances != nil && *d.ScaleSettings.MinInstances == 0,
				Pods: ready[[3]string{oe.Namespace, endpointLabel, d.Name}],
			}
			sort.Strings(dep.Pods)
			var deploy appsv1.Deployment
			err := s.cache.Get(ctx, client.ObjectKey{Namespace: oe.Namespace, Name: desired.DeploymentName(oe, d.Name)}, &deploy)
			switch {
			case err == nil:
				dep.Replicas = 1
				if deploy.Spec.Replicas != nil {
					dep.Replicas = *deploy.Spec.Replicas
				}
			case apierrors.IsNotFound(err):
				// Not made yet (its model is not ready): nothing to wake.
				dep.Wakeable = false
			default:
				return nil, err
			}
			ep.Deployments = append(ep.Deployments, dep)
		}
		out = append(out, ep)
	}
	return out, nil
}

// Wake scales a deployment with no replicas to one, through the
// Deployment's scale subresource (the autoscaler takes it from there).
func (s *Source) Wake(ctx context.Context, namespace, endpoint, deployment string) error {
	var oe servingv1alpha1.OnlineEndpoint
	if err := s.cache.Get(ctx, client.ObjectKey{Namespace: namespace, Name: endpoint}, &oe); err != nil {
		return err
	}
	deploy := &appsv1.Deployment{}
	deploy.Namespace, deploy.Name = namespace, desired.DeploymentName(&oe, deployment)
	for attempt := 0; ; attempt++ {
		scale := &autoscalingv1.Scale{}
		if err := s.client.SubResource("scale").Get(ctx, deploy, scale); err != nil {
			return fmt.Errorf("reading the scale of Deployment %s/%s: %w", namespace, deploy.Name, err)
		}
		if scale.Spec.Replicas >= 1 {
			return nil // already woken (by another request or gateway)
		}
		scale.Spec.Replicas = 1
		err := s.client.SubResource("scale").Update(ctx, deploy, client.WithSubResourceBody(scale), client.FieldOwner(FieldOwner))
		if err == nil {
			s.log.Info("woke a deployment from zero", "namespace", namespace, "endpoint", endpoint, "deployment", deployment)
			return nil
		}
		if !apierrors.IsConflict(err) || attempt >= 3 {
			return fmt.Errorf("scaling Deployment %s/%s to 1: %w", namespace, deploy.Name, err)
		}
	}
}
