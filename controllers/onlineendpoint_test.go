package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
)

// blueGreen is an endpoint of two deployments of the model "llama".
func blueGreen(ns string) *servingv1alpha1.OnlineEndpoint {
	const model = "llama"
	return &servingv1alpha1.OnlineEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat"},
		Spec: servingv1alpha1.OnlineEndpointSpec{
			Deployments: []servingv1alpha1.EndpointDeployment{
				{Name: "blue", Model: model, InstanceCount: ptr(int32(2)),
					RequestSettings: servingv1alpha1.RequestSettings{MaxConcurrentRequestsPerInstance: 4, RequestTimeoutMs: 60000},
					Runtime:         servingv1alpha1.RuntimeOptions{KVCacheTokens: 16384},
					Resources:       servingv1alpha1.ComputeResources{GPUs: 1}},
				{Name: "green", Model: model, ScaleSettings: servingv1alpha1.ScaleSettings{
					Type: servingv1alpha1.ScaleTypeTargetUtilization, MinInstances: ptr(int32(1)), MaxInstances: ptr(int32(4)),
				}},
			},
			Traffic: map[string]int32{"blue": 90, "green": 10},
		},
	}
}

// An endpoint waits for its model, then gets a Deployment and a Service per
// deployment, its own Service, keys; it reports its URIs and readiness.
func TestEndpointServes(t *testing.T) {
	ns := namespace(t)
	e := blueGreen(ns)
	create(t, e)
	eventually(t, "ModelsReady=False naming the model", func() error {
		if err := get(e); err != nil {
			return err
		}
		c := condition(e.Status.Conditions, servingv1alpha1.ConditionModelsReady)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "ModelNotFound" || !strings.Contains(c.Message, "LlamaModel llama") {
			return fmt.Errorf("ModelsReady %+v", c)
		}
		return nil
	})
	m := readyModel(t, ns, "llama")

	blue := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-blue"}}
	green := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-green"}}
	eventually(t, "the Deployments", func() error {
		if err := get(blue); err != nil {
			return err
		}
		return get(green)
	})
	c := blue.Spec.Template.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"serve --model /models/" + m.Status.Artifact.Path, "--max-concurrent-requests 4", "--request-timeout-ms 60000", "--keys-file /etc/leo/keys",
		"--max-queue-wait-ms 500", "--kv-cache-tokens 16384"} { // maxQueueWaitMs: the CRD's default
		if !strings.Contains(args, want) {
			t.Errorf("blue's args %q lack %q", args, want)
		}
	}
	if *blue.Spec.Replicas != 2 || *green.Spec.Replicas != 1 {
		t.Errorf("replicas blue %d green %d, want instanceCount 2 and minInstances 1", *blue.Spec.Replicas, *green.Spec.Replicas)
	}
	if q := c.Resources.Limits["nvidia.com/gpu"]; q.Value() != 1 {
		t.Errorf("GPU limit %v", c.Resources.Limits)
	}
	if !metav1.IsControlledBy(blue, mustGetEndpoint(t, e)) {
		t.Error("the Deployment is not controlled by the endpoint")
	}
	if v := blue.Spec.Template.Spec.Volumes[0]; v.PersistentVolumeClaim == nil || !v.PersistentVolumeClaim.ReadOnly || v.PersistentVolumeClaim.ClaimName != m.Status.Artifact.ClaimName {
		t.Errorf("model volume %+v: want the model's claim, read-only", v)
	}

	keys := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-keys"}}
	eventually(t, "the keys", func() error { return get(keys) })
	p, s := string(keys.Data["primaryKey"]), string(keys.Data["secondaryKey"])
	if len(p) < 43 || len(s) < 43 || p == s {
		t.Errorf("keys %q and %q: want two different random keys of 32 bytes or more", p, s)
	}

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat"}}
	eventually(t, "the endpoint's Service", func() error { return get(svc) })
	if svc.Spec.Selector[desired.LabelDeployment] != "blue" {
		t.Errorf("the endpoint's Service selects %v, want blue (90%%)", svc.Spec.Selector)
	}
	for _, name := range []string{"chat-blue", "chat-green"} {
		if err := get(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
			t.Errorf("Service %s: %v", name, err)
		}
	}

	// The pods become ready (played here): the endpoint is Ready.
	eventually(t, "DeploymentsReady=False", func() error {
		if err := get(e); err != nil {
			return err
		}
		return wantCondition(e.Status.Conditions, servingv1alpha1.ConditionDeploymentsReady, metav1.ConditionFalse, "DeploymentsNotReady")
	})
	for _, d := range []*appsv1.Deployment{blue, green} {
		updateStatus(t, d, func(d *appsv1.Deployment) {
			d.Status.Replicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas, d.Status.UpdatedReplicas = *d.Spec.Replicas, *d.Spec.Replicas, *d.Spec.Replicas, *d.Spec.Replicas
			d.Status.ObservedGeneration = d.Generation
		})
	}
	eventually(t, "Ready", func() error {
		if err := get(e); err != nil {
			return err
		}
		if err := wantCondition(e.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionTrue, "Ready"); err != nil {
			return err
		}
		st := e.Status
		if st.ScoringURI != "http://chat."+ns+".svc.cluster.test/score" || st.OpenAIBaseURL != "http://chat."+ns+".svc.cluster.test/v1" || st.KeysSecretName != "chat-keys" {
			return fmt.Errorf("URIs %q %q, keys %q", st.ScoringURI, st.OpenAIBaseURL, st.KeysSecretName)
		}
		if len(st.Deployments) != 2 || st.Deployments[0].ReadyReplicas != 2 || st.Deployments[1].Replicas != 1 || st.Traffic["blue"] != 90 {
			return fmt.Errorf("deployments %+v, traffic %v", st.Deployments, st.Traffic)
		}
		return nil
	})
	hasEvent(t, ns, "chat", "DeploymentCreated")
	hasEvent(t, ns, "chat", "Ready")
}

// Rotating one key regenerates that key only, once per request.
func TestEndpointKeyRotation(t *testing.T) {
	ns := namespace(t)
	readyModel(t, ns, "llama")
	e := blueGreen(ns)
	create(t, e)
	keys := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-keys"}}
	eventually(t, "the keys", func() error { return get(keys) })
	p0, s0 := string(keys.Data["primaryKey"]), string(keys.Data["secondaryKey"])

	update(t, e, func(e *servingv1alpha1.OnlineEndpoint) {
		e.Annotations = map[string]string{desired.AnnotationRotatePrimaryKey: "2026-11-27T09:00"}
	})
	eventually(t, "a new primary key", func() error {
		if err := get(keys); err != nil {
			return err
		}
		if string(keys.Data["primaryKey"]) == p0 {
			return fmt.Errorf("primary key unchanged")
		}
		return nil
	})
	p1 := string(keys.Data["primaryKey"])
	if string(keys.Data["secondaryKey"]) != s0 {
		t.Error("rotating the primary key changed the secondary")
	}
	hasEvent(t, ns, "chat", "KeyRotated")

	// Re-applying the same request (a GitOps sync) rotates nothing; a
	// request for the secondary key rotates it alone.
	update(t, e, func(e *servingv1alpha1.OnlineEndpoint) {
		e.Annotations[desired.AnnotationRotateSecondaryKey] = "1"
	})
	eventually(t, "a new secondary key", func() error {
		if err := get(keys); err != nil {
			return err
		}
		if string(keys.Data["secondaryKey"]) == s0 {
			return fmt.Errorf("secondary key unchanged")
		}
		return nil
	})
	if string(keys.Data["primaryKey"]) != p1 {
		t.Error("rotating the secondary key changed the primary again")
	}
}

// Changing the traffic moves the endpoint's Service and is recorded;
// changing one deployment rolls it alone; the autoscaler's replicas are
// never reverted; a deployment removed goes with its objects.
func TestEndpointChanges(t *testing.T) {
	ns := namespace(t)
	readyModel(t, ns, "llama")
	readyModel(t, ns, "llama-chat")
	e := blueGreen(ns)
	create(t, e)
	blue := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-blue"}}
	green := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-green"}}
	eventually(t, "the Deployments", func() error {
		if err := get(blue); err != nil {
			return err
		}
		return get(green)
	})

	// The split in force first, so that what follows is a change of it.
	eventually(t, "the first status", func() error {
		if err := get(e); err != nil {
			return err
		}
		if e.Status.ObservedGeneration != e.Generation || e.Status.Traffic["blue"] != 90 {
			return fmt.Errorf("status of generation %d, traffic %v", e.Status.ObservedGeneration, e.Status.Traffic)
		}
		return nil
	})

	// The autoscaler scales green through the scale subresource.
	scale := &autoscalingv1.Scale{}
	if err := k8s.SubResource("scale").Get(context.Background(), green, scale); err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 3
	if err := k8s.SubResource("scale").Update(context.Background(), green, client.WithSubResourceBody(scale)); err != nil {
		t.Fatal(err)
	}

	// Traffic flips to green, and green serves another model.
	blueVersion := mustGetDeployment(t, blue).ResourceVersion
	update(t, e, func(e *servingv1alpha1.OnlineEndpoint) {
		e.Spec.Traffic = map[string]int32{"blue": 20, "green": 80}
		e.Spec.Deployments[1].Model = "llama-chat"
	})
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat"}}
	eventually(t, "the endpoint's Service on green", func() error {
		if err := get(svc); err != nil {
			return err
		}
		if svc.Spec.Selector[desired.LabelDeployment] != "green" {
			return fmt.Errorf("selector %v", svc.Spec.Selector)
		}
		if err := get(e); err != nil {
			return err
		}
		if e.Status.Traffic["green"] != 80 {
			return fmt.Errorf("status traffic %v", e.Status.Traffic)
		}
		return nil
	})
	hasEvent(t, ns, "chat", "TrafficChanged")
	eventually(t, "green rolled to the new model", func() error {
		if err := get(green); err != nil {
			return err
		}
		if !slices.Contains(green.Spec.Template.Spec.Containers[0].Args, "llama-chat") {
			return fmt.Errorf("green's args %v", green.Spec.Template.Spec.Containers[0].Args)
		}
		return nil
	})
	if *green.Spec.Replicas != 3 {
		t.Errorf("green's replicas %d: the operator reverted the autoscaler's 3", *green.Spec.Replicas)
	}
	if mustGetDeployment(t, blue).ResourceVersion != blueVersion {
		t.Error("changing green wrote blue's Deployment")
	}

	// Green is removed: its Deployment and Service go.
	update(t, e, func(e *servingv1alpha1.OnlineEndpoint) {
		e.Spec.Deployments = e.Spec.Deployments[:1]
		e.Spec.Traffic = map[string]int32{"blue": 100}
	})
	eventually(t, "green's objects gone", func() error {
		if err := gone(green); err != nil {
			return err
		}
		return gone(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-green"}})
	})
}

// A model deleted under an endpoint: the endpoint says so and keeps the
// Deployment that serves it.
func TestEndpointModelDeleted(t *testing.T) {
	ns := namespace(t)
	m := readyModel(t, ns, "llama")
	e := blueGreen(ns)
	create(t, e)
	blue := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-blue"}}
	eventually(t, "the Deployment", func() error { return get(blue) })
	if err := k8s.Delete(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ModelsReady=False/ModelDeleted", func() error {
		if err := get(e); err != nil {
			return err
		}
		if err := wantCondition(e.Status.Conditions, servingv1alpha1.ConditionModelsReady, metav1.ConditionFalse, "ModelDeleted"); err != nil {
			return err
		}
		return wantCondition(e.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "ModelDeleted")
	})
	hasEvent(t, ns, "chat", "ModelDeleted")
	if err := get(blue); err != nil || !blue.DeletionTimestamp.IsZero() {
		t.Errorf("the Deployment serving the deleted model must stay: %v", err)
	}
}

func mustGetEndpoint(t *testing.T, e *servingv1alpha1.OnlineEndpoint) *servingv1alpha1.OnlineEndpoint {
	t.Helper()
	if err := get(e); err != nil {
		t.Fatal(err)
	}
	return e
}

func mustGetDeployment(t *testing.T, d *appsv1.Deployment) *appsv1.Deployment {
	t.Helper()
	if err := get(d); err != nil {
		t.Fatal(err)
	}
	return d
}

// What the operator stops setting goes (an environment variable removed),
// also on an autoscaled Deployment; switching a deployment to the
// autoscaler keeps its replica count.
func TestEndpointRemovalsAndScaleSwitch(t *testing.T) {
	ns := namespace(t)
	readyModel(t, ns, "llama")
	e := blueGreen(ns)
	e.Spec.Deployments[0].EnvironmentVariables = servingv1alpha1.EnvironmentVariables{"KEEP": "1", "DROP": "2"}
	e.Spec.Deployments[1].EnvironmentVariables = servingv1alpha1.EnvironmentVariables{"DROP": "2"}
	create(t, e)
	blue := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-blue"}}
	green := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-green"}}
	eventually(t, "the Deployments", func() error {
		if err := get(blue); err != nil {
			return err
		}
		return get(green)
	})
	env := func(d *appsv1.Deployment) []string {
		var names []string
		for _, v := range d.Spec.Template.Spec.Containers[0].Env {
			names = append(names, v.Name)
		}
		return names
	}
	update(t, e, func(e *servingv1alpha1.OnlineEndpoint) {
		e.Spec.Deployments[0].EnvironmentVariables = servingv1alpha1.EnvironmentVariables{"KEEP": "1"}
		e.Spec.Deployments[1].EnvironmentVariables = nil
		// blue goes to the autoscaler: its 2 replicas must stay.
		e.Spec.Deployments[0].ScaleSettings = servingv1alpha1.ScaleSettings{Type: servingv1alpha1.ScaleTypeTargetUtilization, MinInstances: ptr(int32(1)), MaxInstances: ptr(int32(4))}
	})
	eventually(t, "the removed variables gone", func() error {
		if err := get(blue); err != nil {
			return err
		}
		if err := get(green); err != nil {
			return err
		}
		if !slices.Equal(env(blue), []string{"KEEP"}) || len(env(green)) != 0 {
			return fmt.Errorf("blue's env %v, green's %v", env(blue), env(green))
		}
		return nil
	})
	if *blue.Spec.Replicas != 2 || *green.Spec.Replicas != 1 {
		t.Errorf("replicas blue %d (want 2, kept), green %d (want 1)", *blue.Spec.Replicas, *green.Spec.Replicas)
	}
	// A later change of blue leaves the count alone too.
	update(t, e, func(e *servingv1alpha1.OnlineEndpoint) {
		e.Spec.Deployments[0].EnvironmentVariables = nil
	})
	eventually(t, "blue's env emptied", func() error {
		if err := get(blue); err != nil {
			return err
		}
		if len(env(blue)) != 0 {
			return fmt.Errorf("blue's env %v", env(blue))
		}
		return nil
	})
	if *blue.Spec.Replicas != 2 {
		t.Errorf("blue's replicas %d after another change, want 2", *blue.Spec.Replicas)
	}
}

// A Service of the same name that is not the operator's is never taken
// over: the endpoint says NameConflict.
func TestEndpointNameConflict(t *testing.T) {
	ns := namespace(t)
	readyModel(t, ns, "llama")
	theirs := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "theirs"}, Ports: []corev1.ServicePort{{Port: 8000}}},
	}
	create(t, theirs)
	create(t, blueGreen(ns))
	e := &servingv1alpha1.OnlineEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat"}}
	eventually(t, "NameConflict", func() error {
		if err := get(e); err != nil {
			return err
		}
		return wantCondition(e.Status.Conditions, servingv1alpha1.ConditionReady, metav1.ConditionFalse, "NameConflict")
	})
	if err := get(theirs); err != nil || theirs.Spec.Selector["app"] != "theirs" || len(theirs.OwnerReferences) != 0 {
		t.Errorf("their Service was changed: %+v %v", theirs.Spec.Selector, theirs.OwnerReferences)
	}
}
