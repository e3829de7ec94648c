package controllers

import (
	"context"
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
// replicas under an autoscaler, labels a GitOps tool adds) stay with
// whoever sets them.
const fieldOwner = "leo-operator"

// errNotOurs says that an object with the name we need exists and is
// controlled by something else: we never take it over.
type errNotOurs struct{ kind, name, owner string }

func (e errNotOurs) Error() string {
	return fmt.Sprintf("%s %s exists and belongs to %s, not to this object: rename or delete it", e.kind, e.name, e.owner)
}

// applier applies desired objects with server-side apply, and only when
// they differ from what is there: in a steady state the operator makes no
// write at all.
type applier struct {
	client.Client
	scheme *runtime.Scheme
}

// apply makes obj (a desired object, typed) exist as computed, controlled by
// owner. current is the object as read (its zero value when absent: pass
// found=false). It returns whether it wrote.
//
// createOnly are fields set when the object is created but never applied
// later (a Deployment's initial replicas under an autoscaler): they are
// written by a create, which server-side apply does not count as the
// operator owning them.
func (a applier) apply(ctx context.Context, owner, obj, current client.Object, found bool, createOnly func(client.Object)) (bool, error) {
	if err := controllerutil.SetControllerReference(owner, obj, a.scheme); err != nil {
		return false, err
	}
	kind := reflect.TypeOf(obj).Elem().Name()
	if found {
		if ref := metav1.GetControllerOf(current); ref == nil || ref.UID != owner.GetUID() {
			by := "no controller"
			if ref != nil {
				by = ref.Kind + " " + ref.Name
			}
			return false, errNotOurs{kind, obj.GetName(), by}
		}
	}
	if !found && createOnly != nil {
		created := obj.DeepCopyObject().(client.Object)
		createOnly(created)
		if err := a.Create(ctx, created, client.FieldOwner(fieldOwner+"-create")); err == nil || !apierrors.IsAlreadyExists(err) {
			return err == nil, err
		}
		// Created meanwhile (a stale cache): apply over it below.
	}
	want, err := toApply(obj, a.scheme)
	if err != nil {
		return false, err
	}
	if found {
		have, err := runtime.DefaultUnstructuredConverter.ToUnstructured(current)
		if err != nil {
			return false, err
		}
		if contains(have, want.Object) {
			return false, nil
		}
	}
	return true, a.Apply(ctx, client.ApplyConfigurationFromUnstructured(want), client.FieldOwner(fieldOwner), client.ForceOwnership)
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

// contains reports whether have holds every field of want with the same
// value. Lists must have the same length, item by item, since server-side
// apply would make them so.
func contains(have, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return len(w) == 0 && have == nil
		}
		for k, wv := range w {
			hv, present := h[k]
			if !present {
				if isEmpty(wv) {
					continue
				}
				return false
			}
			if !contains(hv, wv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok {
			return len(w) == 0 && have == nil
		}
		if len(h) != len(w) {
			return false
		}
		for i := range w {
			if !contains(h[i], w[i]) {
				return false
			}
		}
		return true
	case nil:
		return true
	default:
		return reflect.DeepEqual(have, want)
	}
}

// isEmpty is a value that the API server drops on the way in (an empty
// map or list, a null).
func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		for _, e := range x {
			if !isEmpty(e) {
				return false
			}
		}
		return true
	case []any:
		return len(x) == 0
	}
	return false
}
