package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/controllers/desired"
)

// modelIndex indexes OnlineEndpoints and BatchDeployments by the
// LlamaModels they use, so that a model's change wakes exactly them.
const modelIndex = "serving.leo.dev/models"

// OnlineEndpointReconciler serves an endpoint's deployments: per deployment
// a Deployment of `leo-runtime serve` pods and a Service, the endpoint's
// Service and its keys Secret.
type OnlineEndpointReconciler struct {
	applier
	Events events.EventRecorder
	Config desired.Config
}

// +kubebuilder:rbac:groups=serving.leo.dev,resources=onlineendpoints,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=onlineendpoints/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=serving.leo.dev,resources=onlineendpoints/finalizers,verbs=update
// +kubebuilder:rbac:groups=serving.leo.dev,resources=llamamodels,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile makes the endpoint's objects match its spec and reports them.
func (r *OnlineEndpointReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var e servingv1alpha1.OnlineEndpoint
	if err := r.Get(ctx, req.NamespacedName, &e); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !e.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // what it owns goes with it (owner references)
	}
	before := e.DeepCopy()
	e.Status.ObservedGeneration = e.Generation
	err := r.reconcile(ctx, &e)
	var notOurs errNotOurs
	if err != nil && asNotOurs(err, &notOurs) {
		setCondition(&e.Status.Conditions, e.Generation, servingv1alpha1.ConditionReady, false, "NameConflict", err.Error())
		err = nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	r.announce(before, &e)
	if equalStatus(before.Status, e.Status) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.Status().Patch(ctx, &e, client.MergeFrom(before))
}

func (r *OnlineEndpointReconciler) reconcile(ctx context.Context, e *servingv1alpha1.OnlineEndpoint) error {
	st := &e.Status
	gen := e.Generation

	// What exists: the endpoint's Deployments and Services, by name.
	sel := client.MatchingLabels(desired.EndpointSelector(e))
	var deps appsv1.DeploymentList
	if err := r.List(ctx, &deps, client.InNamespace(e.Namespace), sel); err != nil {
		return err
	}
	var svcs corev1.ServiceList
	if err := r.List(ctx, &svcs, client.InNamespace(e.Namespace), sel); err != nil {
		return err
	}
	haveDep := map[string]*appsv1.Deployment{}
	for i := range deps.Items {
		if metav1.IsControlledBy(&deps.Items[i], e) {
			haveDep[deps.Items[i].Name] = &deps.Items[i]
		}
	}
	haveSvc := map[string]*corev1.Service{}
	for i := range svcs.Items {
		if metav1.IsControlledBy(&svcs.Items[i], e) {
			haveSvc[svcs.Items[i].Name] = &svcs.Items[i]
		}
	}

	// The models: which are Ready, and what the others wait for.
	models := map[string]*servingv1alpha1.LlamaModel{}
	var waiting []string
	worst := ""
	for _, d := range e.Spec.Deployments {
		var m servingv1alpha1.LlamaModel
		err := r.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: d.Model}, &m)
		_, running := haveDep[desired.DeploymentName(e, d.Name)]
		switch {
		case apierrors.IsNotFound(err) && running, err == nil && !m.DeletionTimestamp.IsZero():
			waiting = append(waiting, fmt.Sprintf("LlamaModel %s (deployment %s) was deleted: the pods running keep serving, but new pods cannot start; recreate the model or change the deployment's model", d.Model, d.Name))
			worst = "ModelDeleted"
		case apierrors.IsNotFound(err):
			waiting = append(waiting, fmt.Sprintf("LlamaModel %s (deployment %s) does not exist", d.Model, d.Name))
			worst = worseReason(worst, "ModelNotFound")
		case err != nil:
			return err
		case m.Status.Phase == servingv1alpha1.ModelPhaseFailed:
			waiting = append(waiting, fmt.Sprintf("LlamaModel %s (deployment %s) failed: %s", d.Model, d.Name, readyReason(&m)))
			worst = worseReason(worst, "ModelFailed")
		case m.Status.Phase != servingv1alpha1.ModelPhaseReady || m.Status.Artifact == nil:
			waiting = append(waiting, fmt.Sprintf("waiting for LlamaModel %s (deployment %s): %s", d.Model, d.Name, orReason(string(m.Status.Phase), "Pending")))
			worst = worseReason(worst, "ModelNotReady")
		default:
			models[d.Name] = &m
		}
	}
	if len(waiting) == 0 {
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionModelsReady, true, "ModelsReady", "every deployment's LlamaModel is Ready")
	} else {
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionModelsReady, false, worst, strings.Join(waiting, "; "))
	}

	// Keys.
	st.KeysSecretName = ""
	if e.Spec.AuthMode != servingv1alpha1.AuthModeNone {
		if err := r.ensureKeys(ctx, e); err != nil {
			return err
		}
		st.KeysSecretName = desired.KeysSecretName(e)
	}

	// Deployments and their Services.
	wantDep, wantSvc := map[string]bool{}, map[string]bool{}
	for _, d := range e.Spec.Deployments {
		name := desired.DeploymentName(e, d.Name)
		wantDep[name], wantSvc[name] = true, true
		if m := models[d.Name]; m != nil {
			var replicas *int32
			if desired.OwnsReplicas(d) {
				replicas = ptr(desired.InitialReplicas(d))
			}
			dep, err := desired.RuntimeDeployment(e, d, m, replicas, r.Config)
			if err != nil {
				return err
			}
			current, found := haveDep[name]
			if !found {
				current = &appsv1.Deployment{}
			}
			var keep *int32 // the count to create with, or to keep: the autoscaler's
			if replicas == nil {
				n := desired.InitialReplicas(d)
				if found && current.Spec.Replicas != nil {
					n = *current.Spec.Replicas
				}
				keep = &n
			}
			wrote, err := r.applyKeepingReplicas(ctx, e, dep, current, found, keep)
			if err != nil {
				return err
			}
			if wrote && found {
				r.event(e, corev1.EventTypeNormal, "DeploymentUpdated", "Update", "deployment %s: updated Deployment %s (model %s); its pods roll", d.Name, name, d.Model)
			} else if wrote {
				r.event(e, corev1.EventTypeNormal, "DeploymentCreated", "Create", "deployment %s: created Deployment %s serving LlamaModel %s", d.Name, name, d.Model)
			}
		}
		svc := desired.RuntimeService(e, d.Name)
		if err := r.applyService(ctx, e, svc, haveSvc); err != nil {
			return err
		}
	}
	primary := desired.PrimaryDeployment(e)
	if primary != "" {
		svc := desired.EndpointService(e, primary)
		wantSvc[svc.Name] = true
		if err := r.applyService(ctx, e, svc, haveSvc); err != nil {
			return err
		}
	}
	for name, dep := range haveDep {
		if !wantDep[name] {
			if err := r.Delete(ctx, dep); client.IgnoreNotFound(err) != nil {
				return err
			}
			r.event(e, corev1.EventTypeNormal, "DeploymentDeleted", "Delete", "deleted Deployment %s: its deployment is no longer in the spec", name)
		}
	}
	for name, svc := range haveSvc {
		if !wantSvc[name] {
			if err := r.Delete(ctx, svc); client.IgnoreNotFound(err) != nil {
				return err
			}
		}
	}
	if e.Spec.AuthMode == servingv1alpha1.AuthModeNone && !mountsKeys(haveDep, desired.KeysSecretName(e)) {
		// Only once no Deployment's pods may mount it: a pod of an old
		// template started meanwhile would wait for it forever.
		if err := r.deleteKeys(ctx, e); err != nil {
			return err
		}
	}

	// Status.
	st.ScoringURI, st.OpenAIBaseURL = "", ""
	if primary != "" || (r.Config.GatewayURL != "" && len(e.Spec.Deployments) > 0) {
		base := desired.EndpointBaseURL(e, r.Config)
		st.ScoringURI, st.OpenAIBaseURL = base+"/score", base+"/v1"
	}
	st.Traffic, st.MirrorTraffic = cloneTraffic(e.Spec.Traffic), cloneTraffic(e.Spec.MirrorTraffic)
	st.Deployments = nil
	var notReady []string
	for _, d := range e.Spec.Deployments {
		ds := servingv1alpha1.DeploymentStatus{Name: d.Name, Model: d.Model}
		dep := haveDep[desired.DeploymentName(e, d.Name)]
		if dep == nil {
			notReady = append(notReady, d.Name+": not created (its model is not Ready)")
		} else {
			ds.Replicas, ds.ReadyReplicas = dep.Status.Replicas, dep.Status.ReadyReplicas
			want := int32(1)
			if dep.Spec.Replicas != nil {
				want = *dep.Spec.Replicas
			}
			if want > 0 && dep.Status.ReadyReplicas == 0 {
				notReady = append(notReady, fmt.Sprintf("%s: 0 of %d pods ready", d.Name, want))
			}
		}
		st.Deployments = append(st.Deployments, ds)
	}
	switch {
	case len(e.Spec.Deployments) == 0:
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionDeploymentsReady, false, "NoDeployments", "the endpoint has no deployments: add one to spec.deployments")
	case len(notReady) > 0:
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionDeploymentsReady, false, "DeploymentsNotReady", strings.Join(notReady, "; "))
	default:
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionDeploymentsReady, true, "DeploymentsReady", "every deployment has a ready pod (or is scaled to zero)")
	}
	mc := meta.FindStatusCondition(st.Conditions, servingv1alpha1.ConditionModelsReady)
	dc := meta.FindStatusCondition(st.Conditions, servingv1alpha1.ConditionDeploymentsReady)
	switch {
	case mc.Status != metav1.ConditionTrue:
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, mc.Reason, mc.Message)
	case dc.Status != metav1.ConditionTrue:
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, false, dc.Reason, dc.Message)
	case primary == "":
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, true, "NoTraffic", "serving, but traffic sends no request to any deployment")
	case r.Config.GatewayURL != "":
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, true, "Ready",
			"serving at "+st.ScoringURI+", traffic "+trafficString(st.Traffic))
	default:
		setCondition(&st.Conditions, gen, servingv1alpha1.ConditionReady, true, "Ready",
			"serving at "+st.ScoringURI+" (no gateway is installed: the endpoint's Service sends every request to "+primary+", the deployment with the largest share)")
	}
	return nil
}

func (r *OnlineEndpointReconciler) applyService(ctx context.Context, e *servingv1alpha1.OnlineEndpoint, svc *corev1.Service, have map[string]*corev1.Service) error {
	current, found := have[svc.Name]
	if !found {
		current = &corev1.Service{}
	}
	_, err := r.apply(ctx, e, svc, current, found)
	return err
}

// ensureKeys makes the keys Secret exist, regenerating a key that is
// missing or whose rotation is asked for, and only that key.
func (r *OnlineEndpointReconciler) ensureKeys(ctx context.Context, e *servingv1alpha1.OnlineEndpoint) error {
	name := desired.KeysSecretName(e)
	rotP, rotS := e.Annotations[desired.AnnotationRotatePrimaryKey], e.Annotations[desired.AnnotationRotateSecondaryKey]
	var s corev1.Secret
	err := r.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: name}, &s)
	if apierrors.IsNotFound(err) {
		// A rotation asked for before the Secret existed is already honoured
		// by the new keys.
		want := desired.KeysSecret(e, newKey(), newKey(), rotP, rotS)
		if err := controllerutil.SetControllerReference(e, want, r.scheme); err != nil {
			return err
		}
		if err := r.Create(ctx, want, client.FieldOwner(fieldOwner)); apierrors.IsAlreadyExists(err) {
			// Not in the cache, which holds only the operator's Secrets:
			// someone else's.
			var other corev1.Secret
			if err := r.reader.Get(ctx, client.ObjectKeyFromObject(want), &other); err != nil {
				return err
			}
			return errNotOurs{"Secret", name, controllerName(&other)}
		} else if err != nil {
			return err
		}
		r.event(e, corev1.EventTypeNormal, "KeysCreated", "Create", "created Secret %s with primaryKey and secondaryKey", name)
		return nil
	}
	if err != nil {
		return err
	}
	if !metav1.IsControlledBy(&s, e) {
		return errNotOurs{"Secret", name, controllerName(&s)}
	}
	p, sec := string(s.Data[desired.PrimaryKey]), string(s.Data[desired.SecondaryKey])
	forP, forS := s.Annotations[desired.AnnotationPrimaryRotatedFor], s.Annotations[desired.AnnotationSecondaryRotatedFor]
	var rotated []string
	if p == "" || (rotP != "" && rotP != forP) {
		p, forP = newKey(), orReason(rotP, forP)
		rotated = append(rotated, desired.PrimaryKey)
	}
	if sec == "" || (rotS != "" && rotS != forS) {
		sec, forS = newKey(), orReason(rotS, forS)
		rotated = append(rotated, desired.SecondaryKey)
	}
	if len(rotated) == 0 {
		return nil
	}
	want := desired.KeysSecret(e, p, sec, forP, forS)
	s.Data = want.Data
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	maps.Copy(s.Annotations, want.Annotations)
	// An update, not an apply: it carries the resourceVersion read, so two
	// rotations racing cannot both win.
	if err := r.Update(ctx, &s, client.FieldOwner(fieldOwner)); err != nil {
		return err
	}
	r.event(e, corev1.EventTypeNormal, "KeyRotated", "RotateKey", "regenerated %s in Secret %s", strings.Join(rotated, " and "), name)
	return nil
}

func (r *OnlineEndpointReconciler) deleteKeys(ctx context.Context, e *servingv1alpha1.OnlineEndpoint) error {
	var s corev1.Secret
	err := r.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: desired.KeysSecretName(e)}, &s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil || !metav1.IsControlledBy(&s, e) {
		return err
	}
	r.event(e, corev1.EventTypeNormal, "KeysDeleted", "Delete", "deleted Secret %s: authMode is none", s.Name)
	return client.IgnoreNotFound(r.Delete(ctx, &s))
}

// announce records events for changes of readiness and traffic.
func (r *OnlineEndpointReconciler) announce(before, e *servingv1alpha1.OnlineEndpoint) {
	was := meta.FindStatusCondition(before.Status.Conditions, servingv1alpha1.ConditionReady)
	now := meta.FindStatusCondition(e.Status.Conditions, servingv1alpha1.ConditionReady)
	if now != nil && (was == nil || was.Status != now.Status || was.Reason != now.Reason) {
		typ := corev1.EventTypeNormal
		if now.Status != metav1.ConditionTrue && now.Reason != "ModelNotReady" && now.Reason != "DeploymentsNotReady" {
			typ = corev1.EventTypeWarning
		}
		r.event(e, typ, now.Reason, "Reconcile", "%s", firstLine(now.Message, 900))
	}
	if before.Status.ObservedGeneration != 0 && !maps.Equal(before.Status.Traffic, e.Status.Traffic) {
		r.event(e, corev1.EventTypeNormal, "TrafficChanged", "Route", "traffic is now %s", trafficString(e.Status.Traffic))
	}
}

func (r *OnlineEndpointReconciler) event(e *servingv1alpha1.OnlineEndpoint, typ, reason, action, note string, args ...any) {
	if r.Events != nil {
		r.Events.Eventf(e, nil, typ, reason, action, note, args...)
	}
}

// SetupWithManager registers the reconciler: endpoints (spec changes and
// key rotation annotations), the objects they own, and the models they use.
func (r *OnlineEndpointReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &servingv1alpha1.OnlineEndpoint{}, modelIndex, func(o client.Object) []string {
		var out []string
		for _, d := range o.(*servingv1alpha1.OnlineEndpoint).Spec.Deployments {
			out = append(out, d.Model)
		}
		return out
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&servingv1alpha1.OnlineEndpoint{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.Secret{}).
		Watches(&servingv1alpha1.LlamaModel{}, handler.EnqueueRequestsFromMapFunc(r.usersOf)).
		Named("onlineendpoint").
		// Several objects at once: a reconcile mostly waits on the API server.
		WithOptions(controller.Options{MaxConcurrentReconciles: maxConcurrentReconciles}).
		Complete(r)
}

// usersOf lists the endpoints that use a model.
func (r *OnlineEndpointReconciler) usersOf(ctx context.Context, o client.Object) []reconcile.Request {
	var list servingv1alpha1.OnlineEndpointList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{modelIndex: o.GetName()}); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, e := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&e)})
	}
	return out
}

// mountsKeys says whether a Deployment's pod template mounts the Secret.
func mountsKeys(deps map[string]*appsv1.Deployment, secret string) bool {
	for _, d := range deps {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == secret {
				return true
			}
		}
	}
	return false
}

// newKey is a random key of 32 bytes, URL-safe base64 (43 characters).
func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics rather)
	return base64.RawURLEncoding.EncodeToString(b)
}

func readyReason(m *servingv1alpha1.LlamaModel) string {
	if c := meta.FindStatusCondition(m.Status.Conditions, servingv1alpha1.ConditionReady); c != nil {
		return c.Reason + ": " + firstLine(c.Message, 300)
	}
	return "Failed"
}

// worseReason keeps the most serious of two reasons for ModelsReady.
func worseReason(a, b string) string {
	rank := map[string]int{"": 0, "ModelNotReady": 1, "ModelNotFound": 2, "ModelFailed": 3, "ModelDeleted": 4}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

func cloneTraffic(m map[string]int32) map[string]int32 {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

func trafficString(m map[string]int32) string {
	if len(m) == 0 {
		return "{}"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s: %d", n, m[n])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
