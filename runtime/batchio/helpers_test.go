package batchio

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// writeFile writes content to a file named name in a fresh temporary
// folder and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// readRows is ReadFile of content written to a file named name.
func readRows(t *testing.T, name, content string, f Format, column string) (Format, []Row, error) {
	t.Helper()
	return ReadFile(writeFile(t, name, content), f, column)
}

// want is a row's golden expectation.
type want struct {
	Line   int
	Prompt string
	Err    string // the exact error text; "" for none
}

// checkRows compares rows with the golden ones: numbers are 0, 1, ...;
// lines, prompts and errors as given.
func checkRows(t *testing.T, rows []Row, wants []want) {
	t.Helper()
	if len(rows) != len(wants) {
		t.Errorf("got %d rows, want %d:\n%s", len(rows), len(wants), dump(rows))
		return
	}
	for i, r := range rows {
		w := wants[i]
		got := want{Line: r.Line, Prompt: r.Prompt}
		if r.Err != nil {
			got.Err = r.Err.Error()
		}
		if r.Number != i || got != w {
			t.Errorf("row %d:\n got number %d %+v\nwant number %d %+v", i, r.Number, got, i, w)
		}
	}
}

func dump(rows []Row) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %d line %d prompt %q messages %q custom_id %q url %q err %v\n", r.Number, r.Line, r.Prompt, r.Messages, r.CustomID, r.URL, r.Err)
	}
	return b.String()
}

// checkRowInvariants checks what holds of any rows Parse returns.
func checkRowInvariants(t *testing.T, f Format, rows []Row) {
	t.Helper()
	ids := map[string]bool{}
	prevLine := 0
	for i, r := range rows {
		if r.Number != i {
			t.Fatalf("row %d has number %d", i, r.Number)
		}
		if r.Line <= prevLine {
			t.Fatalf("row %d starts on line %d, after row %d's line %d", i, r.Line, i-1, prevLine)
		}
		prevLine = r.Line
		if !slices.IsSorted(r.Ignored) {
			t.Fatalf("row %d: Ignored not sorted: %q", i, r.Ignored)
		}
		if r.Err != nil {
			if !strings.HasPrefix(r.Err.Error(), fmt.Sprintf("line %d", r.Line)) {
				t.Fatalf("row %d: error %q does not start with its line %d", i, r.Err, r.Line)
			}
			if r.Prompt != "" || r.Messages != nil || r.Overrides.MaxNewTokens != nil || r.Ignored != nil {
				t.Fatalf("failed row %d keeps its contents: %+v", i, r)
			}
			if f == FormatOpenAI && r.CustomID != "" {
				ids[r.CustomID] = true // it may be a duplicate: the later one failed
			}
			continue
		}
		if len(r.Prompt) > MaxPromptBytes {
			t.Fatalf("row %d: a prompt of %d bytes", i, len(r.Prompt))
		}
		if !utf8.ValidString(r.Prompt) {
			t.Fatalf("row %d: the prompt is not valid UTF-8: %q", i, r.Prompt)
		}
		switch f {
		case FormatOpenAI:
			if r.CustomID == "" || ids[r.CustomID] {
				t.Fatalf("row %d: custom_id %q empty or a duplicate", i, r.CustomID)
			}
			ids[r.CustomID] = true
			switch r.URL {
			case URLChat:
				if len(r.Messages) == 0 || r.Prompt != "" {
					t.Fatalf("chat row %d: %d messages, prompt %q", i, len(r.Messages), r.Prompt)
				}
				size := 0
				for _, m := range r.Messages {
					if m.Role == "" {
						t.Fatalf("chat row %d: a message without a role", i)
					}
					size += len(m.Content)
				}
				if size > MaxPromptBytes {
					t.Fatalf("chat row %d: %d bytes of messages", i, size)
				}
			case URLCompletion:
				if r.Messages != nil {
					t.Fatalf("completion row %d has messages", i)
				}
			default:
				t.Fatalf("row %d: url %q", i, r.URL)
			}
			if r.Overrides.Temperature != nil && (r.Overrides.DoSample == nil || *r.Overrides.DoSample != (*r.Overrides.Temperature > 0)) {
				t.Fatalf("row %d: temperature %v but do_sample %v", i, *r.Overrides.Temperature, r.Overrides.DoSample)
			}
		default:
			if r.Messages != nil || r.URL != "" || r.CustomID != "" {
				t.Fatalf("row %d of a %s file: %+v", i, f, r)
			}
		}
	}
}
