package testenv

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RunReadyPod plays the ReplicaSet controller and the kubelet for one pod
// of d named name: it is created from d's template, with its http
// container port set to port (where a test server listens on loopback,
// standing for the container), then made Running and Ready at 127.0.0.1.
func RunReadyPod(t testing.TB, k8s client.Client, d *appsv1.Deployment, name string, port int32) *corev1.Pod {
	t.Helper()
	tpl := d.Spec.Template
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: name, Labels: tpl.Labels}, Spec: *tpl.Spec.DeepCopy()}
	CreateReadyPod(t, k8s, p, port)
	return p
}

// CreateReadyPod creates p with its first container's first port set to
// port and no probes, then makes it Running and Ready at 127.0.0.1.
func CreateReadyPod(t testing.TB, k8s client.Client, p *corev1.Pod, port int32) {
	t.Helper()
	c := &p.Spec.Containers[0]
	c.Ports[0].ContainerPort = port
	c.StartupProbe, c.LivenessProbe, c.ReadinessProbe = nil, nil, nil
	ctx := context.Background()
	if err := k8s.Create(ctx, p); err != nil {
		t.Errorf("creating pod %s: %v", p.Name, err)
		return
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
	if err := k8s.Status().Update(ctx, p); err != nil {
		t.Errorf("making pod %s ready: %v", p.Name, err)
	}
}
