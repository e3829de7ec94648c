package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
)

// This control plane has no node, kubelet or Job controller (the
// end-to-end cluster brings them). To show the operator's whole flow, the
// demo plays their part for the prepare Jobs, as the controller tests do:
// it finishes each Job with a pod whose termination message is what
// `leo-runtime prepare` writes. Everything else is the operator's doing.

// finishPrepareJobs completes every prepare Job in ns with a result.
func finishPrepareJobs(ctx context.Context, k8s client.Client, ns string) (int, error) {
	var jobs batchv1.JobList
	if err := k8s.List(ctx, &jobs, client.InNamespace(ns), client.MatchingLabels{desired.LabelComponent: "prepare"}); err != nil {
		return 0, err
	}
	for i := range jobs.Items {
		job := &jobs.Items[i]
		quant := "none"
		args := job.Spec.Template.Spec.Containers[0].Args
		for j := range args {
			if args[j] == "--quantization" && j+1 < len(args) {
				quant = args[j+1]
			}
		}
		now := metav1.Now()
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: job.Name + "-demo", Labels: map[string]string{batchv1.JobNameLabel: job.Name, batchv1.ControllerUidLabel: string(job.UID)}},
			Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "prepare", Image: "leo-runtime:demo"}}},
		}
		if err := k8s.Create(ctx, pod); err != nil {
			return 0, err
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "prepare", Image: "leo-runtime:demo",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now,
				Message: fmt.Sprintf(`{"artifact":{"path":"/models/model.gguf","sizeBytes":7161089728,"sha256":"%s","format":"gguf","quantization":%q},`+
					`"model":{"architecture":"llama","parameterCount":6738415616,"contextLength":4096,"vocabSize":32000,"embeddingLength":4096,"layers":32,"chatTemplate":true},"steps":["download"]}`,
					strings.Repeat("ab", 32), quant)}},
		}}}
		if err := k8s.Status().Update(ctx, pod); err != nil {
			return 0, err
		}
		job.Status.StartTime, job.Status.CompletionTime, job.Status.Succeeded = &now, &now, 1
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastProbeTime: now, LastTransitionTime: now},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastProbeTime: now, LastTransitionTime: now},
		}
		if err := k8s.Status().Update(ctx, job); err != nil {
			return 0, err
		}
	}
	return len(jobs.Items), nil
}

// waitModelsReady waits until every model in ns is Ready and the
// endpoints' Deployments exist.
func waitModelsReady(ctx context.Context, k8s client.Client, ns string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ms servingv1alpha1.LlamaModelList
		if err := k8s.List(ctx, &ms, client.InNamespace(ns)); err != nil {
			return err
		}
		var deps appsv1.DeploymentList
		if err := k8s.List(ctx, &deps, client.InNamespace(ns)); err != nil {
			return err
		}
		ready := len(deps.Items) > 0
		for _, m := range ms.Items {
			ready = ready && m.Status.Phase == servingv1alpha1.ModelPhaseReady
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the models were not Ready within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// printMade lists what the operator made in ns, with each pod's command.
func printMade(ctx context.Context, k8s client.Client, ns string) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "MADE\tNAME\tOWNER\tDETAIL")
	owner := func(o metav1.Object) string {
		var names []string
		for _, r := range o.GetOwnerReferences() {
			names = append(names, strings.ToLower(r.Kind)+"/"+r.Name)
		}
		return strings.Join(names, ",")
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := k8s.List(ctx, &pvcs, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, p := range pvcs.Items {
		_, _ = fmt.Fprintf(w, "PersistentVolumeClaim\t%s\t%s\t%s\n", p.Name, owner(&p), p.Spec.Resources.Requests.Storage())
	}
	var jobs batchv1.JobList
	if err := k8s.List(ctx, &jobs, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, j := range jobs.Items {
		_, _ = fmt.Fprintf(w, "Job\t%s\t%s\tleo-runtime %s\n", j.Name, owner(&j), short(j.Spec.Template.Spec.Containers[0].Args))
	}
	var deps appsv1.DeploymentList
	if err := k8s.List(ctx, &deps, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, d := range deps.Items {
		replicas := int32(1)
		if d.Spec.Replicas != nil {
			replicas = *d.Spec.Replicas
		}
		_, _ = fmt.Fprintf(w, "Deployment\t%s\t%s\t%d× leo-runtime %s\n", d.Name, owner(&d), replicas, short(d.Spec.Template.Spec.Containers[0].Args))
	}
	var svcs corev1.ServiceList
	if err := k8s.List(ctx, &svcs, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, s := range svcs.Items {
		_, _ = fmt.Fprintf(w, "Service\t%s\t%s\tselects %s\n", s.Name, owner(&s), s.Spec.Selector[desired.LabelDeployment])
	}
	var secrets corev1.SecretList
	if err := k8s.List(ctx, &secrets, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, s := range secrets.Items {
		_, _ = fmt.Fprintf(w, "Secret\t%s\t%s\tprimaryKey (%d characters), secondaryKey\n", s.Name, owner(&s), len(s.Data[desired.PrimaryKey]))
	}
	return w.Flush()
}

// short shows a command line's first arguments.
func short(args []string) string {
	if len(args) > 7 {
		return strings.Join(args[:7], " ") + " …"
	}
	return strings.Join(args, " ")
}
