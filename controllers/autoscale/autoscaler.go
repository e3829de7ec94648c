package autoscale

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
)

// FieldOwner is the field manager of the autoscaler's writes.
const FieldOwner = "leo-autoscaler"

// GatewayName is the app.kubernetes.io/name label of the gateway's pods,
// whose metrics the autoscaler reads.
const GatewayName = "leo-gateway"

// historyLength is how many decisions an endpoint's status keeps.
const historyLength = 20

// tick is how often the autoscaler looks for deployments due a reading;
// each is read at its own pollingInterval.
const tick = time.Second

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments/scale,verbs=get;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=onlineendpoints/status,verbs=get;update;patch

// Autoscaler sets the replicas of target_utilization deployments. It runs
// in the manager, on the leader only.
type Autoscaler struct {
	// Client reads endpoints, Deployments and pods (from the manager's
	// cache: pods by the labels CacheSelector allows) and writes scales
	// and status.
	Client client.Client
	Log    logr.Logger
	// GatewayNamespace is where the gateway's pods run (the chart's
	// namespace): only pods there count as gateways, so that nobody else
	// can feed the autoscaler made-up load by labelling a pod.
	GatewayNamespace string
	// Now is the clock; nil: time.Now.
	Now func() time.Time

	http     *http.Client
	policies map[deploymentKey]*tracked
}

// tracked is one deployment's policy and when it was last read.
type tracked struct {
	policy   *Policy
	lastRead time.Time
	seen     bool // in the latest round
}

// NeedLeaderElection is true: one autoscaler decides, whatever the
// replicas of the manager.
func (a *Autoscaler) NeedLeaderElection() bool { return true }

// Start runs until ctx ends.
func (a *Autoscaler) Start(ctx context.Context) error {
	if a.Now == nil {
		a.Now = time.Now
	}
	a.http = scrapeClient()
	a.policies = map[deploymentKey]*tracked{}
	// Start the cache of pods now, so that a missing permission shows at
	// once in the log rather than with the first autoscaled deployment.
	warm, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := a.Client.List(warm, &corev1.PodList{}, client.MatchingLabels{desired.LabelName: GatewayName}); err != nil {
		a.Log.Error(err, "reading the gateway's pods failed (does the manager's role allow pods list and watch?)")
	}
	cancel()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		if err := a.round(ctx); err != nil && ctx.Err() == nil {
			a.Log.Error(err, "autoscaling round failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// target is one autoscaled deployment due a reading.
type target struct {
	key      deploymentKey
	endpoint *servingv1alpha1.OnlineEndpoint
	spec     servingv1alpha1.EndpointDeployment
	deploy   *appsv1.Deployment
	pods     []corev1.Pod
}

// round reads and decides for every autoscaled deployment due a reading.
func (a *Autoscaler) round(ctx context.Context) error {
	now := a.Now()
	var oes servingv1alpha1.OnlineEndpointList
	if err := a.Client.List(ctx, &oes); err != nil {
		return err
	}
	for _, t := range a.policies {
		t.seen = false
	}
	var due []target
	for i := range oes.Items {
		oe := &oes.Items[i]
		if !oe.DeletionTimestamp.IsZero() {
			continue
		}
		for _, d := range oe.Spec.Deployments {
			if d.ScaleSettings.Type != servingv1alpha1.ScaleTypeTargetUtilization {
				continue
			}
			k := deploymentKey{oe.Namespace, oe.Name, d.Name}
			tr := a.policies[k]
			if tr == nil {
				tr = &tracked{policy: Restore(lastRemoval(oe, d.Name), now)}
				a.policies[k] = tr
			}
			tr.seen = true
			interval := d.ScaleSettings.PollingInterval.Or(time.Second)
			if now.Sub(tr.lastRead) < interval-tick/2 {
				continue
			}
			var deploy appsv1.Deployment
			if err := a.Client.Get(ctx, client.ObjectKey{Namespace: oe.Namespace, Name: desired.DeploymentName(oe, d.Name)}, &deploy); err != nil {
				if apierrors.IsNotFound(err) {
					continue // its model is not ready yet
				}
				return err
			}
			var pods corev1.PodList
			sel := desired.EndpointSelector(oe)
			sel[desired.LabelDeployment] = d.Name
			if err := a.Client.List(ctx, &pods, client.InNamespace(oe.Namespace), client.MatchingLabels(sel)); err != nil {
				return err
			}
			tr.lastRead = now
			due = append(due, target{key: k, endpoint: oe, spec: d, deploy: &deploy, pods: pods.Items})
		}
	}
	for k, t := range a.policies {
		if !t.seen {
			delete(a.policies, k) // the deployment is gone, or no longer autoscaled
		}
	}
	if len(due) == 0 {
		return nil
	}
	if a.GatewayNamespace == "" {
		return errors.New("the autoscaler needs the gateway's namespace")
	}
	gateways, complete, err := a.gatewayLoads(ctx)
	if err != nil {
		return err
	}
	for _, t := range due {
		if err := a.decide(ctx, now, t, gateways[t.key], !complete); err != nil {
			a.Log.Error(err, "autoscaling a deployment", "namespace", t.key.namespace, "endpoint", t.key.endpoint, "deployment", t.key.deployment)
		}
	}
	return nil
}

// gatewayLoads reads every ready gateway pod's metrics; complete is false
// when one could not be read.
func (a *Autoscaler) gatewayLoads(ctx context.Context) (loads map[deploymentKey]*gatewayLoad, complete bool, err error) {
	var pods corev1.PodList
	if err := a.Client.List(ctx, &pods, client.InNamespace(a.GatewayNamespace), client.MatchingLabels{desired.LabelName: GatewayName}); err != nil {
		return nil, false, err
	}
	loads = map[deploymentKey]*gatewayLoad{}
	complete = true
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range pods.Items {
		addrs := gatewayMetricsAddrs(&pods.Items[i])
		if len(addrs) == 0 {
			continue
		}
		wg.Go(func() {
			fams, url, err := firstFamilies(ctx, a.http, addrs)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				err = addGateway(fams, loads)
			}
			if err != nil {
				complete = false
				a.Log.Info("reading a gateway's metrics failed: no scale-down this round", "url", url, "err", err.Error())
			}
		})
	}
	wg.Wait()
	return loads, complete, nil
}

// gatewayMetricsAddrs are where a ready gateway pod may serve /metrics, to
// try in order (none when it is not ready): its "metrics" port; or, on a
// pod that declares none, the default metrics port and then its "http"
// port. Gateways from before the metrics listener (chart
// gateway.metricsPort) served /metrics on their public port, so reading
// them there keeps scale-down going while an upgrade rolls them; a current
// gateway in a pod of an older chart still serves it on the default port.
func gatewayMetricsAddrs(p *corev1.Pod) []string {
	addr, ok := desired.ReadyPodPort(p, "metrics", desired.GatewayMetricsPort)
	if !ok {
		return nil
	}
	addrs := []string{addr}
	_, metrics := desired.ContainerPort(p, "metrics")
	if _, http := desired.ContainerPort(p, "http"); !metrics && http {
		public, _ := desired.ReadyPodPort(p, "http", desired.GatewayMetricsPort)
		addrs = append(addrs, public)
	}
	return addrs
}

// decide reads the deployment's pods, asks the policy, and writes a change.
func (a *Autoscaler) decide(ctx context.Context, now time.Time, t target, gw *gatewayLoad, partial bool) error {
	s := Sample{Time: now, Replicas: 1, Partial: partial}
	if t.deploy.Spec.Replicas != nil {
		s.Replicas = *t.deploy.Spec.Replicas
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	podsLoad := 0.0
	for i := range t.pods {
		p := &t.pods[i]
		if !p.DeletionTimestamp.IsZero() || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		url, ready := podMetricsURL(p)
		if !ready {
			s.Pending++
			continue
		}
		s.Ready++
		wg.Go(func() {
			fams, err := families(ctx, a.http, url)
			var l podLoad
			if err == nil {
				l, err = runtimeLoad(fams)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.Partial = true
				a.Log.Info("reading a runtime pod's metrics failed: no scale-down this round", "url", url, "err", err.Error())
				return
			}
			// In flight counts the queued requests too.
			podsLoad += l.inFlight
			s.KVCacheUsage = max(s.KVCacheUsage, l.kvUsage)
		})
	}
	wg.Wait()
	// Pods asked for but not created yet are pending too.
	s.Pending = max(s.Pending, s.Replicas-s.Ready)
	// Requests reach the pods through the gateways, which also count the
	// ones held for a wake-up; some may go to the pods directly.
	s.Load = podsLoad
	if gw != nil {
		s.Load = max(s.Load, gw.inFlight)
		s.Requests = gw.requests
	}

	ss := t.spec.ScaleSettings
	set := Settings{
		Min: 1, Max: 1, PerInstance: t.spec.RequestSettings.MaxConcurrentRequestsPerInstance,
		TargetPercent: ss.TargetUtilizationPercentage, Window: time.Minute,
		ScaleDownDelay: ss.ScaleDownDelay.Or(5 * time.Minute), IdleToZero: ss.ScaleToZeroIdleTime.Or(15 * time.Minute),
	}
	if ss.MinInstances != nil {
		set.Min = *ss.MinInstances
	}
	if ss.MaxInstances != nil {
		set.Max = *ss.MaxInstances
	}
	if set.TargetPercent == 0 {
		set.TargetPercent = 70
	}
	to, d := a.policies[t.key].policy.Decide(s, set)
	a.Log.V(1).Info("reading", "namespace", t.key.namespace, "endpoint", t.key.endpoint, "deployment", t.key.deployment,
		"load", s.Load, "replicas", s.Replicas, "ready", s.Ready, "pending", s.Pending, "kvCacheUsage", s.KVCacheUsage, "want", to)
	if d == nil || to == s.Replicas {
		return nil
	}
	if err := a.scale(ctx, t.deploy, s.Replicas, to); err != nil {
		return err
	}
	a.Log.Info("scaled", "namespace", t.key.namespace, "endpoint", t.key.endpoint, "deployment", t.key.deployment,
		"from", d.From, "to", d.To, "reason", d.Reason)
	return a.record(ctx, t.endpoint, t.key.deployment, *d)
}

// scale writes replicas through the Deployment's scale subresource, only
// if they are still what the decision saw.
func (a *Autoscaler) scale(ctx context.Context, deploy *appsv1.Deployment, from, to int32) error {
	scale := &autoscalingv1.Scale{}
	if err := a.Client.SubResource("scale").Get(ctx, deploy, scale); err != nil {
		return err
	}
	if scale.Spec.Replicas != from {
		return fmt.Errorf("replicas changed meanwhile (%d, not %d): deciding again next time", scale.Spec.Replicas, from)
	}
	scale.Spec.Replicas = to
	return a.Client.SubResource("scale").Update(ctx, deploy, client.WithSubResourceBody(scale), client.FieldOwner(FieldOwner))
}

// record appends a decision to the endpoint's status.scalingHistory.
func (a *Autoscaler) record(ctx context.Context, oe *servingv1alpha1.OnlineEndpoint, deployment string, d Decision) error {
	for attempt := 0; ; attempt++ {
		var cur servingv1alpha1.OnlineEndpoint
		if err := a.Client.Get(ctx, client.ObjectKeyFromObject(oe), &cur); err != nil {
			return client.IgnoreNotFound(err)
		}
		before := cur.DeepCopy()
		reason := d.Reason
		if len(reason) > 256 {
			reason = reason[:256]
		}
		cur.Status.ScalingHistory = append(cur.Status.ScalingHistory, servingv1alpha1.ScalingDecision{
			Deployment: deployment, Time: metav1.NewTime(d.Time.UTC().Truncate(time.Second)), From: d.From, To: d.To, Reason: reason,
		})
		if h := cur.Status.ScalingHistory; len(h) > historyLength {
			cur.Status.ScalingHistory = h[len(h)-historyLength:]
		}
		err := a.Client.Status().Patch(ctx, &cur, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
		if err == nil || !apierrors.IsConflict(err) || attempt >= 3 {
			return err
		}
	}
}

// lastRemoval is the time of the latest removal of an instance of the
// deployment in the endpoint's history (zero if none).
func lastRemoval(oe *servingv1alpha1.OnlineEndpoint, deployment string) time.Time {
	var t time.Time
	for _, d := range oe.Status.ScalingHistory {
		if d.Deployment == deployment && d.To < d.From && d.Time.After(t) {
			t = d.Time.Time
		}
	}
	return t
}

// podMetricsURL is a ready pod's metrics URL; false when it is not ready.
func podMetricsURL(p *corev1.Pod) (string, bool) {
	addr, ok := desired.ReadyPodAddr(p)
	return "http://" + addr + "/metrics", ok
}
