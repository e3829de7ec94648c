package test

import (
	"sort"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	"github.com/leo-operator/leo/internal/testenv"
)

// TestEveryFieldIsDocumented makes sure `kubectl explain` has something to
// say about every field of every kind: each property in the committed CRDs
// carries a description.
func TestEveryFieldIsDocumented(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	crds, err := testenv.CRDs(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(crds) != 3 {
		t.Fatalf("want 3 CRDs in config/crd/bases, found %d", len(crds))
	}
	fields := 0
	for _, crd := range crds {
		for _, v := range crd.Spec.Versions {
			var undocumented []string
			walk(crd.Spec.Names.Kind, v.Schema.OpenAPIV3Schema, &fields, &undocumented)
			sort.Strings(undocumented)
			for _, path := range undocumented {
				t.Errorf("%s has no description: add a doc comment to the Go field", path)
			}
		}
	}
	if fields < 100 {
		t.Errorf("only %d fields found; are the CRDs generated?", fields)
	}
}

func walk(path string, s *apiextensionsv1.JSONSchemaProps, fields *int, undocumented *[]string) {
	if s == nil {
		return
	}
	for name, p := range s.Properties {
		child := path + "." + name
		*fields++
		// apiVersion, kind and the object's metadata are documented by
		// Kubernetes itself (the API server publishes ObjectMeta's docs).
		builtin := !strings.Contains(path, ".") && (name == "apiVersion" || name == "kind" || name == "metadata")
		if p.Description == "" && !builtin {
			*undocumented = append(*undocumented, child)
		}
		walk(child, &p, fields, undocumented)
	}
	if s.Items != nil {
		walk(path+"[]", s.Items.Schema, fields, undocumented)
	}
	if s.AdditionalProperties != nil {
		walk(path+"{}", s.AdditionalProperties.Schema, fields, undocumented)
	}
}
