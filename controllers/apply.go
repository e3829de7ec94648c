package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// fieldOwner is the operator's field manager: server-side apply records
// which fields it owns, so that fields it leaves out (a Deployment's
// replicas under an autoscaler, labels a GitOps tool adds, a webhook's
// additions) stay with whoever sets them, and fields it stops setting are
// removed.
const fieldOwner = "leo-operator"

// replicasOwner is the field manager that holds an autoscaled Deployment's
// replica count on the operator's behalf until the autoscaler writes it:
// server-side apply removes a field when its last owner stops applying it,
// so the count is handed to this manager before the operator's own applies
// leave it out.
const replicasOwner = "leo-operator-initial-replicas"

// annotationApplied records, on every object the operator applies, the
// hash of what it applied: the next reconcile applies again only when the
// hash of what it wants differs. This is how the operator makes no write
// in a steady state, and notices what it stopped setting (a removed
// environment variable) as well as what it changed.
const annotationApplied = "serving.leo.dev/applied"

// errNotOurs says that an object with the name we need exists and is
// controlled by something else: we never take it over.
type errNotOurs struct{ kind, name, owner string }

func (e errNotOurs) Error() string {
	return fmt.Sprintf("%s %s exists and belongs to %s, not to this object: rename or delete it", e.kind, e.name, e.owner)
}

// applier applies desired objects with server-side apply, and only when
// they changed since the last apply.
type applier struct {
	client.Client
	scheme *runtime.Scheme
	// reader reads uncached: the manager caches only objects with the
	// operator's label, so one absent from the cache may still exist,
	// someone else's.
	reader client.Reader
}

// apply makes obj (a desired object, typed) exist as computed, controlled by
// owner. current is the cached object (found false when the cache has
// none). It returns whether it wrote.
func (a applier) apply(ctx context.Context, owner, obj, current client.Object, found bool) (bool, error) {
	return a.applyKeepingReplicas(ctx, owner, obj, current, found, nil)
}

// applyKeepingReplicas is apply for a Deployment whose replica count is not
// the operator's (autoscaled): replicas is the count to create it with, or
// to keep, handed over to replicasOwner before the apply that leaves it out.
func (a applier) applyKeepingReplicas(ctx context.Context, owner, obj, current client.Object, found bool, replicas *int32) (bool, error) {
	if err := controllerutil.SetControllerReference(owner, obj, a.scheme); err != nil {
		return false, err
	}
	kind := reflect.TypeOf(obj).Elem().Name()
	if found && !metav1.IsControlledBy(current, owner) {
		return false, errNotOurs{kind, obj.GetName(), controllerName(current)}
	}
	if !found {
		other := obj.DeepCopyObject().(client.Object)
		err := a.reader.Get(ctx, client.ObjectKeyFromObject(obj), other)
		if err == nil && !metav1.IsControlledBy(other, owner) {
			return false, errNotOurs{kind, obj.GetName(), controllerName(other)}
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
	}
	want, err := toApply(obj, a.scheme)
	if err != nil {
		return false, err
	}
	hash, err := hashOf(want.Object)
	if err != nil {
		return false, err
	}
	if found && current.GetAnnotations()[annotationApplied] == hash {
		return false, nil
	}
	ann := want.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[annotationApplied] = hash
	want.SetAnnotations(ann)

	if replicas != nil && found {
		if err := a.holdReplicas(ctx, want, *replicas); err != nil {
			return false, err
		}
	}
	if replicas != nil && !found {
		// Created with the count, which is then handed over below.
		if err := unstructured.SetNestedField(want.Object, int64(*replicas), "spec", "replicas"); err != nil {
			return false, err
		}
	}
	if err := a.Apply(ctx, client.ApplyConfigurationFromUnstructured(want), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return false, err
	}
	if replicas != nil && !found {
		// The operator owns the count along with replicasOwner until its
		// next apply, which leaves it out and so lets go of it; the
		// autoscaler's first write takes it from both.
		if err := a.holdReplicas(ctx, want, *replicas); err != nil {
			return true, err
		}
	}
	return true, nil
}

// holdReplicas applies the replica count alone as replicasOwner. It does
// not force: the count is the one read, and if another writer changed it
// meanwhile the conflict sends the reconcile round again with a fresh read,
// rather than undoing the other writer.
func (a applier) holdReplicas(ctx context.Context, obj *unstructured.Unstructured, replicas int32) error {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(obj.GroupVersionKind())
	u.SetNamespace(obj.GetNamespace())
	u.SetName(obj.GetName())
	if err := unstructured.SetNestedField(u.Object, int64(replicas), "spec", "replicas"); err != nil {
		return err
	}
	return a.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(replicasOwner))
}

// toApply is obj as an apply configuration: the fields set in it, with its
// kind, and without status or a creation time.
func toApply(obj client.Object, scheme *runtime.Scheme) (*unstructured.Unstructured, error) {
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return nil, err
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	return u, nil
}

// hashOf is a short hash of an object's JSON (encoding/json sorts map keys,
// so equal objects hash equally).
func hashOf(m map[string]any) (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}
