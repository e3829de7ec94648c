// Package v1alpha1 holds the serving.leo.dev/v1alpha1 API: LlamaModel,
// OnlineEndpoint and BatchDeployment.
//
// Validation lives in the CRDs themselves (OpenAPI bounds, defaults and CEL
// rules with messages a person understands), so it holds for kubectl, GitOps
// controllers and every other client alike, without a webhook.
//
// +kubebuilder:object:generate=true
// +groupName=serving.leo.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "serving.leo.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes lists the kinds of this package, in one place.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&LlamaModel{}, &LlamaModelList{},
		&OnlineEndpoint{}, &OnlineEndpointList{},
		&BatchDeployment{}, &BatchDeploymentList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
