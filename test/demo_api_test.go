package test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/leo-operator/leo/internal/testenv"
)

// TestDemoAPI runs the demo without a node (make demo-api) and checks what it shows.
func TestDemoAPI(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "./hack/demo-api")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"applied llamamodel/llama-2-7b-q4",
		"applied onlineendpoint/llama-chat",
		"applied batchdeployment/review-summaries",
		"leo-prepare-",              // the models' Jobs
		"Downloading",               // their phase before the Jobs finish
		"Ready",                     // and after
		"llama-chat-blue",           // an endpoint's Deployment
		"leo-runtime serve --model", // running the runtime
		"Secret",                    // with its keys
		"traffic percentages must add up to 100",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
