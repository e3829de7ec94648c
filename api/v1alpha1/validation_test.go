package v1alpha1_test

// These tests send objects to a real kube-apiserver (envtest) with leo's
// CRDs installed: the samples must be accepted, invalid objects rejected with
// the message the CRD promises, and defaults must appear. A coverage check
// fails when a CEL rule of a CRD has no rejected object here.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	servingv1alpha1 "github.com/leo-operator/leo/api/v1alpha1"
	"github.com/leo-operator/leo/internal/testenv"
)

var k8s client.Client

func TestMain(m *testing.M) {
	os.Exit(runWithAPIServer(m))
}

func runWithAPIServer(m *testing.M) int {
	env, err := testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "API validation tests need a kube-apiserver:", err)
		return 1
	}
	// Stop also after a failed start: it may have left etcd running.
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting kube-apiserver and etcd:", err)
		return 1
	}
	k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// object parses one YAML document into an unstructured object. Working with
// raw documents lets a test leave fields out, as a user's YAML would.
func object(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("bad test YAML: %v\n%s", err, doc)
	}
	if u.GetNamespace() == "" {
		u.SetNamespace("default")
	}
	return u
}

// uniqueName gives every object its own name so cases do not collide.
var nameSeq int

func uniqueName(prefix string) string {
	nameSeq++
	return fmt.Sprintf("%s-%d", prefix, nameSeq)
}

func samples(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "serving_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in config/samples: %v", err)
	}
	objs, err := testenv.ReadObjects(files...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestSamplesAreAccepted(t *testing.T) {
	kinds := map[string]int{}
	for _, s := range samples(t) {
		s.SetNamespace("samples-" + strings.ToLower(s.GetKind()))
		ensureNamespace(t, s.GetNamespace())
		if err := k8s.Create(ctx(t), s); err != nil {
			t.Errorf("sample %s %s rejected: %v", s.GetKind(), s.GetName(), err)
			continue
		}
		kinds[s.GetKind()]++
	}
	for _, k := range []string{"LlamaModel", "OnlineEndpoint", "BatchDeployment"} {
		if kinds[k] == 0 {
			t.Errorf("no accepted sample of kind %s", k)
		}
	}
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	if err := k8s.Create(ctx(t), ns); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

const minimalModel = `
apiVersion: serving.leo.dev/v1alpha1
kind: LlamaModel
metadata: {name: m}
spec:
  source: {uri: "hf://meta-llama/Llama-2-7b-hf"}
`

const minimalEndpoint = `
apiVersion: serving.leo.dev/v1alpha1
kind: OnlineEndpoint
metadata: {name: e}
spec:
  deployments:
    - {name: blue, model: m}
`

const minimalBatch = `
apiVersion: serving.leo.dev/v1alpha1
kind: BatchDeployment
metadata: {name: b}
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "pvc://data/out"}
`

// invalid is an object the API server must refuse, and the words it must
// give as the reason.
type invalid struct {
	name string
	doc  string
	want string
}

// rejected lists objects refused at creation. Each CEL rule of the CRDs has at
// least one (TestEveryCELRuleIsCovered checks), plus OpenAPI bounds a user is
// likely to hit.
var rejected = []invalid{
	// LlamaModel
	{"unknown uri scheme", `
kind: LlamaModel
spec: {source: {uri: "ftp://example.com/llama.gguf"}}`, "source.uri must start with hf://, https://, s3:// or pvc://"},
	{"hf uri without repo", `
kind: LlamaModel
spec: {source: {uri: "hf://meta-llama"}}`, "source.uri hf:// must look like hf://org/repo or hf://org/repo@revision"},
	{"s3 uri with bad bucket", `
kind: LlamaModel
spec: {source: {uri: "s3://Bad_Bucket/llama.gguf"}}`, "source.uri s3:// must look like s3://bucket/key"},
	{"pvc uri without path", `
kind: LlamaModel
spec: {source: {uri: "pvc://models"}}`, "source.uri pvc:// must look like pvc://claim/path"},
	{"https uri naming a folder", `
kind: LlamaModel
spec: {source: {uri: "https://example.com/models/"}}`, "source.uri https:// must name a file"},
	{"plain http without opt-in", `
kind: LlamaModel
spec: {source: {uri: "http://mirror.local/llama.gguf"}}`, "source.uri uses plain http://"},
	{"file globs on a single https file", `
kind: LlamaModel
spec: {source: {uri: "https://example.com/llama.gguf", files: ["*.gguf"]}}`, "source.files selects files in a repository"},
	{"endpoint that is not a URL", `
kind: LlamaModel
spec: {source: {uri: "s3://models/llama", endpoint: "minio:9000"}}`, "source.endpoint must be an http:// or https:// URL"},
	{"sha256 not hex", `
kind: LlamaModel
spec: {source: {uri: "hf://a/b", sha256: "xyz"}}`, "spec.source.sha256 in body should match '^[a-f0-9]{64}$'"},
	{"existing claim with a size", `
kind: LlamaModel
spec: {source: {uri: "hf://a/b"}, storage: {existingClaim: models, size: 10Gi}}`, "storage.existingClaim uses a claim that already exists"},
	{"download timeout too short", `
kind: LlamaModel
spec: {source: {uri: "hf://a/b"}, download: {timeout: 10s}}`, "download.timeout must be at least 1m"},
	{"stall timeout too short", `
kind: LlamaModel
spec: {source: {uri: "hf://a/b"}, download: {stallTimeout: 1s}}`, "download.stallTimeout must be at least 5s"},
	{"negative retries", `
kind: LlamaModel
spec: {source: {uri: "hf://a/b"}, download: {retries: -1}}`, "spec.download.retries: Invalid value: -1: spec.download.retries in body should be greater than or equal to 0"},
	{"unknown quantization", `
kind: LlamaModel
spec: {source: {uri: "hf://a/b"}, quantization: q3_k}`, `spec.quantization: Unsupported value: "q3_k"`},

	// OnlineEndpoint
	{"traffic not adding up to 100", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m}, {name: green, model: m}]
  traffic: {blue: 60, green: 30}`, "traffic percentages must add up to 100, or to 0 to send no traffic"},
	{"traffic to an unknown deployment", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m}]
  traffic: {blue: 50, purple: 50}`, "traffic names a deployment that is not in spec.deployments"},
	{"traffic percentage out of range", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m}, {name: green, model: m}]
  traffic: {blue: 110, green: -10}`, "each traffic percentage must be between 0 and 100"},
	{"mirror to a live deployment", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m}, {name: green, model: m}]
  traffic: {blue: 90, green: 10}
  mirrorTraffic: {green: 10}`, "mirrorTraffic cannot copy requests to a deployment that receives live traffic"},
	{"mirror to an unknown deployment", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m}]
  traffic: {blue: 100}
  mirrorTraffic: {green: 10}`, "mirrorTraffic names a deployment that is not in spec.deployments"},
	{"mirror above 50 percent", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m}, {name: green, model: m}]
  traffic: {blue: 100}
  mirrorTraffic: {green: 60}`, "mirrorTraffic percentage must be between 0 and 50"},
	{"mirror to two deployments", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m}, {name: green, model: m}, {name: red, model: m}]
  traffic: {blue: 100}
  mirrorTraffic: {green: 10, red: 10}`, "mirrorTraffic can copy requests to one deployment only"},
	{"min instances above max", `
kind: OnlineEndpoint
spec:
  deployments:
    - {name: blue, model: m, scaleSettings: {type: target_utilization, minInstances: 3, maxInstances: 2}}`,
		"scaleSettings.minInstances must not be greater than scaleSettings.maxInstances (which defaults to 1)"},
	{"negative instance count", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, instanceCount: -1}]`, "spec.deployments[0].instanceCount in body should be greater than or equal to 0"},
	{"request timeout above Azure's maximum", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, requestSettings: {requestTimeoutMs: 200000}}]`, "spec.deployments[0].requestSettings.requestTimeoutMs in body should be less than or equal to 180000"},
	{"polling interval too short", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, scaleSettings: {pollingInterval: 100ms}}]`, "scaleSettings.pollingInterval must be between 1s and 5m"},
	{"scale-down delay too long", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, scaleSettings: {scaleDownDelay: 48h}}]`, "scaleSettings.scaleDownDelay must be between 0s and 24h"},
	{"scale-to-zero idle time too short", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, scaleSettings: {scaleToZeroIdleTime: 5s}}]`, "scaleSettings.scaleToZeroIdleTime must be between 30s and 168h"},
	{"liveness probe success threshold", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, livenessProbe: {successThreshold: 3}}]`, "livenessProbe.successThreshold must be 1"},
	{"deployment name with capitals", `
kind: OnlineEndpoint
spec:
  deployments: [{name: Blue, model: m}]`, "deployment name must be lowercase letters, digits and '-'"},
	{"duplicate deployment names", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m}, {name: blue, model: m2}]`, `spec.deployments[1]: Duplicate value: {"name":"blue"}`},
	{"KV cache smaller than the context", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, runtime: {contextLength: 4096, kvCacheTokens: 1024}}]`, "runtime.kvCacheTokens must hold at least one whole context"},
	{"bad GPU resource name", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, resources: {gpus: 1, gpuResourceName: "nvidia gpu"}}]`, "gpuResourceName must be an extended resource name with a domain"},
	{"bad environment variable name", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, environmentVariables: {"1BAD": "x"}}]`, "environment variable names must start with a letter or _"},
	{"GPU resource without a domain", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, resources: {gpus: 1, gpuResourceName: gpu}}]`, "gpuResourceName must be an extended resource name with a domain"},
	{"endpoint name with a dot", `
kind: OnlineEndpoint
metadata: {name: chat.v2}
spec:
  deployments: [{name: blue, model: m}]`, "an OnlineEndpoint's name must be lowercase letters, digits and '-', starting with a letter"},
	{"malformed duration", `
kind: LlamaModel
spec: {source: {uri: "hf://a/b"}, download: {timeout: "10 minutes"}}`, "spec.download.timeout in body should match"},
	{"service name too long", `
kind: OnlineEndpoint
metadata: {name: an-endpoint-with-a-rather-long-name-for-its-own-good}
spec:
  deployments: [{name: a-deployment-with-a-long-name, model: m}]`, "endpoint name and deployment name together must be shorter than 63 characters"},

	// BatchDeployment
	{"folder input from https", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "https://example.com/data/in.csv", type: uri_folder}
  output: {uri: "pvc://data/out"}`, "input.type uri_folder needs a pvc:// or s3:// uri"},
	{"input uri scheme", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "file:///data/in.csv"}
  output: {uri: "pvc://data/out"}`, "input.uri must be pvc://claim/path, s3://bucket/prefix or https://host/path/file"},
	{"output to https", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "https://example.com/out"}`, "output.uri must be pvc://claim/path or s3://bucket/prefix"},
	{"output file name with a path", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "pvc://data/out"}
  settings: {outputFileName: "../etc/passwd"}`, "outputFileName must be a plain file name"},
	{"mini-batch timeout too short", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "pvc://data/out"}
  settings: {retrySettings: {timeout: 100ms}}`, "retrySettings.timeout must be at least 1s"},
	{"error threshold below -1", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "pvc://data/out"}
  settings: {errorThreshold: -2}`, "spec.settings.errorThreshold in body should be greater than or equal to -1"},
	{"zero batch instances", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "pvc://data/out"}
  instanceCount: 0`, "spec.instanceCount in body should be greater than or equal to 1"},
	{"topP above 1", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "pvc://data/out"}
  parameters: {topP: 1.5}`, "topP must be greater than 0 and at most 1"},
	{"repetition penalty of 0", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "pvc://data/out"}
  parameters: {repetitionPenalty: 0}`, "repetitionPenalty must be greater than 0 and at most 10"},
	{"batch GPU resource name", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "pvc://data/out"}
  resources: {gpuResourceName: "/gpu"}`, "gpuResourceName must be an extended resource name with a domain"},
	{"batch environment variable name", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "pvc://data/out"}
  settings: {environmentVariables: {"A B": "x"}}`, "environment variable names must start with a letter or _"},
}

func TestInvalidObjectsAreRejected(t *testing.T) {
	for _, c := range rejected {
		t.Run(c.name, func(t *testing.T) {
			u := object(t, "apiVersion: serving.leo.dev/v1alpha1\n"+strings.TrimLeft(c.doc, "\n"))
			if u.GetName() == "" {
				u.SetName(uniqueName("invalid"))
			}
			err := k8s.Create(ctx(t), u)
			if err == nil {
				t.Fatalf("accepted; want rejection with %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("rejected with\n  %v\nwant the message\n  %q", err, c.want)
			}
		})
	}
}

// messageKey is the fixed text a CEL rule's error starts with: its message,
// or the first string literal of its messageExpression.
func messageKey(v apiextensionsv1.ValidationRule) string {
	if v.Message != "" {
		return v.Message
	}
	if m := regexp.MustCompile(`^'([^']*)'`).FindStringSubmatch(v.MessageExpression); m != nil {
		return m[1]
	}
	return v.Rule
}

func celRules(s *apiextensionsv1.JSONSchemaProps, out *[]apiextensionsv1.ValidationRule) {
	if s == nil {
		return
	}
	*out = append(*out, s.XValidations...)
	for _, p := range s.Properties {
		celRules(&p, out)
	}
	if s.Items != nil {
		celRules(s.Items.Schema, out)
	}
	if s.AdditionalProperties != nil {
		celRules(s.AdditionalProperties.Schema, out)
	}
}

// updateRules are transition rules, checked by TestImmutableFields.
var updateRules = map[string]bool{
	"source.uri, source.files and source.sha256 are immutable: create a new LlamaModel for other weights": true,
	"the run has started: only spec.suspend may change; create a new BatchDeployment for a different run": true,
}

func TestEveryCELRuleIsCovered(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	crds, err := testenv.CRDs(root)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, crd := range crds {
		kind := crd.Spec.Names.Kind
		for _, v := range crd.Spec.Versions {
			var rules []apiextensionsv1.ValidationRule
			celRules(v.Schema.OpenAPIV3Schema, &rules)
			for _, r := range rules {
				total++
				key := messageKey(r)
				if updateRules[key] {
					continue
				}
				covered := false
				for _, c := range rejected {
					// The case's expected words identify the rule when they
					// are (a long enough part of) its message.
					if strings.Contains(c.doc, "kind: "+kind+"\n") && len(c.want) >= 20 &&
						(strings.Contains(key, c.want) || strings.Contains(c.want, key)) {
						covered = true
					}
				}
				if !covered {
					t.Errorf("%s: no rejected object in this test checks the CEL rule %q (message %q)", kind, r.Rule, key)
				}
			}
		}
	}
	if total < 20 {
		t.Errorf("found only %d CEL rules in the CRDs; is config/crd/bases generated?", total)
	}
}

func TestImmutableFields(t *testing.T) {
	t.Run("a model's source", func(t *testing.T) {
		m := object(t, minimalModel)
		m.SetName(uniqueName("immutable"))
		if err := k8s.Create(ctx(t), m); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(m.Object, "hf://meta-llama/Llama-2-13b-hf", "spec", "source", "uri"); err != nil {
			t.Fatal(err)
		}
		err := k8s.Update(ctx(t), m)
		if err == nil || !strings.Contains(err.Error(), "source.uri, source.files and source.sha256 are immutable: create a new LlamaModel for other weights") {
			t.Fatalf("changing the source: got %v, want the immutability message", err)
		}
	})

	t.Run("a model's quantization may change", func(t *testing.T) {
		m := object(t, minimalModel)
		m.SetName(uniqueName("mutable"))
		if err := k8s.Create(ctx(t), m); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(m.Object, "q8_0", "spec", "quantization"); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Update(ctx(t), m); err != nil {
			t.Fatalf("changing the quantization: %v", err)
		}
	})

	t.Run("a batch before and after its run started", func(t *testing.T) {
		var b servingv1alpha1.BatchDeployment
		u := object(t, minimalBatch)
		u.SetName(uniqueName("batch"))
		if err := k8s.Create(ctx(t), u); err != nil {
			t.Fatal(err)
		}
		key := client.ObjectKeyFromObject(u)
		if err := k8s.Get(ctx(t), key, &b); err != nil {
			t.Fatal(err)
		}
		// Not started: the spec may change.
		b.Spec.Model = "another-model"
		if err := k8s.Update(ctx(t), &b); err != nil {
			t.Fatalf("changing a batch that has not started: %v", err)
		}
		// The operator starts the run.
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		b.Status.StartTime = &now
		b.Status.Phase = servingv1alpha1.BatchPhaseRunning
		if err := k8s.Status().Update(ctx(t), &b); err != nil {
			t.Fatalf("setting status.startTime: %v", err)
		}
		changes := map[string]func(*servingv1alpha1.BatchDeployment){
			"model":         func(b *servingv1alpha1.BatchDeployment) { b.Spec.Model = "m" },
			"input":         func(b *servingv1alpha1.BatchDeployment) { b.Spec.Input.URI = "pvc://data/other" },
			"settings":      func(b *servingv1alpha1.BatchDeployment) { b.Spec.Settings.MiniBatchSize = 99 },
			"parameters":    func(b *servingv1alpha1.BatchDeployment) { b.Spec.Parameters.MaxNewTokens = 7 },
			"instanceCount": func(b *servingv1alpha1.BatchDeployment) { b.Spec.InstanceCount = 5 },
			"nodeSelector":  func(b *servingv1alpha1.BatchDeployment) { b.Spec.NodeSelector = map[string]string{"a": "b"} },
			"output":        func(b *servingv1alpha1.BatchDeployment) { b.Spec.Output.URI = "pvc://data/elsewhere" },
			"stop":          func(b *servingv1alpha1.BatchDeployment) { b.Spec.Parameters.Stop = []string{"END"} },
			"temperature":   func(b *servingv1alpha1.BatchDeployment) { v := 0.1; b.Spec.Parameters.Temperature = &v },
			"memory":        func(b *servingv1alpha1.BatchDeployment) { q := resource.MustParse("1Gi"); b.Spec.Resources.Memory = &q },
			"gpus":          func(b *servingv1alpha1.BatchDeployment) { b.Spec.Resources.GPUs = 2 },
			"tolerations": func(b *servingv1alpha1.BatchDeployment) {
				b.Spec.Tolerations = []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpExists}}
			},
			"runtimeClassName": func(b *servingv1alpha1.BatchDeployment) { n := "nvidia"; b.Spec.RuntimeClassName = &n },
			"environment": func(b *servingv1alpha1.BatchDeployment) {
				b.Spec.Settings.EnvironmentVariables = map[string]string{"A": "b"}
			},
		}
		for field, change := range changes {
			var cur servingv1alpha1.BatchDeployment
			if err := k8s.Get(ctx(t), key, &cur); err != nil {
				t.Fatal(err)
			}
			change(&cur)
			err := k8s.Update(ctx(t), &cur)
			if err == nil || !strings.Contains(err.Error(), "the run has started: only spec.suspend may change") {
				t.Errorf("changing %s of a running batch: got %v, want the run-started message", field, err)
			}
		}
		var cur servingv1alpha1.BatchDeployment
		if err := k8s.Get(ctx(t), key, &cur); err != nil {
			t.Fatal(err)
		}
		cur.Spec.Suspend = true
		if err := k8s.Update(ctx(t), &cur); err != nil {
			t.Fatalf("suspending a running batch: %v", err)
		}
	})
}

// A Go client (as the operator will be) reads an object and writes it back
// with values reformatted: "0.5" becomes "500m", empty lists and maps vanish,
// false is left out. The immutability rules must not mistake that for a
// change.
func TestImmutableFieldsSurviveAGoClientRoundTrip(t *testing.T) {
	t.Run("a started batch", func(t *testing.T) {
		u := object(t, `
apiVersion: serving.leo.dev/v1alpha1
kind: BatchDeployment
metadata: {name: roundtrip}
spec:
  model: m
  input: {uri: "pvc://data/in"}
  output: {uri: "pvc://data/out"}
  settings: {retrySettings: {timeout: 300s}, environmentVariables: {}}
  parameters: {stop: [], temperature: 0.6, topP: 1.0, doSample: false}
  resources: {cpu: "0.5", memory: 24576Mi}
  nodeSelector: {}
  tolerations: []
  suspend: false`)
		if err := k8s.Create(ctx(t), u); err != nil {
			t.Fatal(err)
		}
		var b servingv1alpha1.BatchDeployment
		key := client.ObjectKeyFromObject(u)
		if err := k8s.Get(ctx(t), key, &b); err != nil {
			t.Fatal(err)
		}
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		b.Status.StartTime = &now
		if err := k8s.Status().Update(ctx(t), &b); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Get(ctx(t), key, &b); err != nil {
			t.Fatal(err)
		}
		b.Spec.Suspend = true
		b.Labels = map[string]string{"team": "reviews"}
		if err := k8s.Update(ctx(t), &b); err != nil {
			t.Fatalf("suspending a started batch through a Go client: %v", err)
		}
		if err := k8s.Get(ctx(t), key, &b); err != nil {
			t.Fatal(err)
		}
		if got := b.Spec.Resources.CPU.String(); got != "500m" {
			t.Errorf("the round trip was meant to rewrite cpu 0.5 as 500m; got %s", got)
		}
	})

	t.Run("a model's source", func(t *testing.T) {
		u := object(t, `
apiVersion: serving.leo.dev/v1alpha1
kind: LlamaModel
metadata: {name: roundtrip}
spec:
  source: {uri: "s3://models/llama/", files: [], allowInsecureHTTP: false}`)
		if err := k8s.Create(ctx(t), u); err != nil {
			t.Fatal(err)
		}
		var m servingv1alpha1.LlamaModel
		key := client.ObjectKeyFromObject(u)
		if err := k8s.Get(ctx(t), key, &m); err != nil {
			t.Fatal(err)
		}
		m.Spec.Quantization = servingv1alpha1.QuantizationQ4_0
		m.Spec.Source.CredentialsSecretRef = &corev1.LocalObjectReference{Name: "s3-reader"}
		m.Spec.Source.Endpoint = "https://minio.storage:9000"
		if err := k8s.Update(ctx(t), &m); err != nil {
			t.Fatalf("changing quantization, credentials and endpoint through a Go client: %v", err)
		}
		m.Spec.Source.Files = []string{"*.gguf"}
		err := k8s.Update(ctx(t), &m)
		if err == nil || !strings.Contains(err.Error(), "source.uri, source.files and source.sha256 are immutable") {
			t.Fatalf("changing source.files: got %v, want the immutability message", err)
		}
	})
}

func TestDefaults(t *testing.T) {
	t.Run("LlamaModel", func(t *testing.T) {
		u := object(t, minimalModel)
		u.SetName(uniqueName("defaults"))
		if err := k8s.Create(ctx(t), u); err != nil {
			t.Fatal(err)
		}
		var m servingv1alpha1.LlamaModel
		if err := k8s.Get(ctx(t), client.ObjectKeyFromObject(u), &m); err != nil {
			t.Fatal(err)
		}
		expect(t, "format", m.Spec.Format, servingv1alpha1.ModelFormatAuto)
		expect(t, "quantization", m.Spec.Quantization, servingv1alpha1.QuantizationNone)
		expect(t, "download.timeout", string(m.Spec.Download.Timeout), "2h")
		expect(t, "download.stallTimeout", string(m.Spec.Download.StallTimeout), "60s")
		expect(t, "download.retries", deref(m.Spec.Download.Retries), int32(3))
	})

	t.Run("OnlineEndpoint", func(t *testing.T) {
		u := object(t, minimalEndpoint)
		u.SetName(uniqueName("defaults"))
		if err := k8s.Create(ctx(t), u); err != nil {
			t.Fatal(err)
		}
		var e servingv1alpha1.OnlineEndpoint
		if err := k8s.Get(ctx(t), client.ObjectKeyFromObject(u), &e); err != nil {
			t.Fatal(err)
		}
		expect(t, "authMode", e.Spec.AuthMode, servingv1alpha1.AuthModeKey)
		d := e.Spec.Deployments[0]
		expect(t, "instanceCount", deref(d.InstanceCount), int32(1))
		expect(t, "scaleSettings.type", d.ScaleSettings.Type, servingv1alpha1.ScaleTypeDefault)
		expect(t, "scaleSettings.minInstances", deref(d.ScaleSettings.MinInstances), int32(1))
		expect(t, "scaleSettings.maxInstances", deref(d.ScaleSettings.MaxInstances), int32(1))
		expect(t, "scaleSettings.targetUtilizationPercentage", d.ScaleSettings.TargetUtilizationPercentage, int32(70))
		expect(t, "scaleSettings.pollingInterval", string(d.ScaleSettings.PollingInterval), "1s")
		expect(t, "scaleSettings.scaleDownDelay", string(d.ScaleSettings.ScaleDownDelay), "5m")
		expect(t, "scaleSettings.scaleToZeroIdleTime", string(d.ScaleSettings.ScaleToZeroIdleTime), "15m")
		expect(t, "requestSettings.requestTimeoutMs", d.RequestSettings.RequestTimeoutMs, int32(5000))
		expect(t, "requestSettings.maxConcurrentRequestsPerInstance", d.RequestSettings.MaxConcurrentRequestsPerInstance, int32(1))
		expect(t, "requestSettings.maxQueueWaitMs", deref(d.RequestSettings.MaxQueueWaitMs), int32(500))
		for name, p := range map[string]*servingv1alpha1.ProbeSettings{"livenessProbe": d.LivenessProbe, "readinessProbe": d.ReadinessProbe} {
			if p == nil {
				t.Errorf("%s not defaulted", name)
				continue
			}
			expect(t, name+".initialDelaySeconds", deref(p.InitialDelaySeconds), int32(10))
			expect(t, name+".periodSeconds", p.PeriodSeconds, int32(10))
			expect(t, name+".timeoutSeconds", p.TimeoutSeconds, int32(2))
			expect(t, name+".successThreshold", p.SuccessThreshold, int32(1))
			expect(t, name+".failureThreshold", p.FailureThreshold, int32(30))
		}
		expect(t, "resources.gpuResourceName", d.Resources.GPUResourceName, "nvidia.com/gpu")
	})

	t.Run("BatchDeployment", func(t *testing.T) {
		u := object(t, minimalBatch)
		u.SetName(uniqueName("defaults"))
		if err := k8s.Create(ctx(t), u); err != nil {
			t.Fatal(err)
		}
		var b servingv1alpha1.BatchDeployment
		if err := k8s.Get(ctx(t), client.ObjectKeyFromObject(u), &b); err != nil {
			t.Fatal(err)
		}
		expect(t, "instanceCount", b.Spec.InstanceCount, int32(1))
		expect(t, "input.type", b.Spec.Input.Type, servingv1alpha1.InputTypeFolder)
		expect(t, "input.format", b.Spec.Input.Format, servingv1alpha1.InputFormatAuto)
		expect(t, "input.column", b.Spec.Input.Column, "input_string")
		s := b.Spec.Settings
		expect(t, "settings.miniBatchSize", s.MiniBatchSize, int32(10))
		expect(t, "settings.maxConcurrencyPerInstance", s.MaxConcurrencyPerInstance, int32(1))
		expect(t, "settings.outputAction", s.OutputAction, servingv1alpha1.OutputActionAppendRow)
		expect(t, "settings.outputFileName", s.OutputFileName, "predictions.csv")
		expect(t, "settings.retrySettings.maxRetries", deref(s.RetrySettings.MaxRetries), int32(3))
		expect(t, "settings.retrySettings.timeout", string(s.RetrySettings.Timeout), "30s")
		expect(t, "settings.errorThreshold", deref(s.ErrorThreshold), int32(-1))
		expect(t, "settings.loggingLevel", s.LoggingLevel, servingv1alpha1.LoggingLevelInfo)
		expect(t, "parameters.maxNewTokens", b.Spec.Parameters.MaxNewTokens, int32(256))
		expect(t, "resources.gpuResourceName", b.Spec.Resources.GPUResourceName, "nvidia.com/gpu")
	})
}

func expect[T comparable](t *testing.T, field string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("default of %s: got %v, want %v", field, got, want)
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// accepted lists edge cases that are valid and must stay so.
var accepted = []struct{ name, doc string }{
	{"no traffic at all", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m}, {name: green, model: m}]
  traffic: {blue: 0, green: 0}`},
	{"mirror to a deployment without live traffic", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m}, {name: green, model: m}]
  traffic: {blue: 100, green: 0}
  mirrorTraffic: {green: 50}`},
	{"scale to zero", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, instanceCount: 0, scaleSettings: {type: target_utilization, minInstances: 0, maxInstances: 3}}]`},
	{"minInstances above the default maxInstances when not autoscaling", `
kind: OnlineEndpoint
spec:
  deployments: [{name: blue, model: m, instanceCount: 3, scaleSettings: {minInstances: 2}}]`},
	{"an endpoint with no deployments yet", `
kind: OnlineEndpoint
spec: {authMode: none}`},
	{"plain http when allowed", `
kind: LlamaModel
spec: {source: {uri: "http://mirror.local/models/llama.gguf", allowInsecureHTTP: true}}`},
	{"an existing claim", `
kind: LlamaModel
spec: {source: {uri: "pvc://models/llama-2-7b/model.gguf"}, storage: {existingClaim: models}}`},
	{"s3 prefix with a custom endpoint", `
kind: LlamaModel
spec: {source: {uri: "s3://models/llama-2-7b/", endpoint: "http://minio.storage:9000", files: ["*.safetensors"]}}`},
	{"hf revision by commit", `
kind: LlamaModel
spec: {source: {uri: "hf://meta-llama/Llama-2-7b-chat-hf@08751db2aca9bf2f7f80d2e516117a53d7450235"}}`},
	{"one https input file scored with every setting", `
kind: BatchDeployment
spec:
  model: m
  input: {uri: "https://example.com/data/in.jsonl", type: uri_file, format: jsonl}
  output: {uri: "s3://results/run-1"}
  settings: {outputAction: summary_only, errorThreshold: 0, retrySettings: {maxRetries: 0}}
  parameters: {temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1.1, stop: ["\n\n"], seed: 42}`},
}

func TestValidEdgeCasesAreAccepted(t *testing.T) {
	for _, c := range accepted {
		t.Run(c.name, func(t *testing.T) {
			u := object(t, "apiVersion: serving.leo.dev/v1alpha1\n"+strings.TrimLeft(c.doc, "\n"))
			u.SetName(uniqueName("valid"))
			if err := k8s.Create(ctx(t), u); err != nil {
				t.Fatalf("rejected: %v", err)
			}
		})
	}
}
