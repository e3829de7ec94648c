//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the README's main job (make demo's script) on the cluster
// and checks what it shows a newcomer: the sample request's answer through
// the gateway, the 401 without the key, the batch run's predictions, the
// objects' status.
func TestDemo(t *testing.T) {
	c := connect(t)
	if os.Getenv("HELM") == "" {
		t.Fatal("HELM is not set: run `make test-e2e`")
	}
	start := time.Now()
	out := c.run(filepath.Join(c.root, "hack", "demo", "demo.sh"))
	t.Logf("the demo ran in %v:\n%s", time.Since(start).Round(time.Second), out)
	for _, want := range []string{
		`answer (random weights, so gibberish):` + "\n" + `[{"0":"`,
		"the same request without the key: HTTP 401",
		"llamamodel.serving.leo.dev/stories   pvc://weights/stories15M-f16.gguf   q8_0           Ready",
		"onlineendpoint.serving.leo.dev/chat   key    True    Ready",
		"Succeeded   2       2           0",
		"demo done in",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	// predictions.csv: a row per input row (two files of three rows).
	if n := len(regexp.MustCompile(`(?m),tales-[12]\.csv$`).FindAllString(out, -1)); n != 6 {
		t.Errorf("the demo printed %d prediction rows, want 6", n)
	}
}
