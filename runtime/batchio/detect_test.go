package batchio

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDetect(t *testing.T) {
	openai := `{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}` + "\n"
	for _, c := range []struct {
		name, head string
		want       Format
	}{
		// By extension, any case.
		{"a.csv", "", FormatCSV},
		{"dir/a.CSV", `{"input_string": "x"}`, FormatCSV},
		{"a.csv", openai, FormatCSV},
		{"a.jsonl", "", FormatJSONL},
		{"a.json", "input_string\nx\n", FormatJSONL},
		{"a.NDJSON", `{"input_string": "x"}`, FormatJSONL},
		{"a.jsonl", openai, FormatOpenAI},
		{"a.json", "\xef\xbb\xbf\n\r\n  \n" + openai, FormatOpenAI},
		{"a.jsonl", "\n" + `{"input_string": "x"}` + "\n" + openai, FormatJSONL}, // the first record decides
		// Sniffed.
		{"a.txt", "input_string\nx\n", FormatCSV},
		{"a", "", FormatCSV},
		{"a", "  \n\t", FormatCSV},
		{"a.tsv", `{"input_string": "x"}`, FormatJSONL},
		{"data", "\xef\xbb\xbf  \r\n {\"input_string\": \"x\"}", FormatJSONL},
		{"data", openai, FormatOpenAI},
		{"data", "[" + openai, FormatCSV},
		{"dir.csv/data", "{}", FormatJSONL}, // the folder's name does not count
		// The record test: the three keys, in any order, at the top level.
		{"a.jsonl", `{"body": {}, "method": "POST", "custom_id": "a"}`, FormatOpenAI},
		{"a.jsonl", `{"custom_id": "a", "method": "POST"}`, FormatJSONL},
		{"a.jsonl", `{"custom_id": "a", "method": "POST", "x": {"body": {}}}`, FormatJSONL},
		{"a.jsonl", `{"x": {"custom_id": "a", "method": "POST", "body": {}}}`, FormatJSONL},
		{"a.jsonl", `{"x": ["custom_id", "method", "body"]}`, FormatJSONL},
		{"a.jsonl", `["custom_id", "method", "body"]`, FormatJSONL},
		// A head cut short: the keys seen count.
		{"a.jsonl", `{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "us`, FormatOpenAI},
		{"a.jsonl", `{"custom_id": "a", "method": "PO`, FormatJSONL},
		{"a.jsonl", `{"custom_id": "a", "meth`, FormatJSONL},
		// Not JSON after the keys: still the keys seen.
		{"a.jsonl", `{"custom_id": "a", "method": "POST", "body": x}`, FormatOpenAI},
	} {
		if got := Detect(c.name, []byte(c.head)); got != c.want {
			t.Errorf("Detect(%q, %q) = %q, want %q", c.name, c.head, got, c.want)
		}
	}
}

func TestReadFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := ReadFile(filepath.Join(dir, "missing.csv"), FormatAuto, ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, _, err := ReadFile(dir, FormatAuto, ""); err == nil || err.Error() != dir+": is a directory, not an input file" {
		t.Errorf("a folder: %v", err)
	}
	if _, _, err := ReadFile("/dev/null", FormatAuto, ""); err == nil || !strings.HasPrefix(err.Error(), "/dev/null: is not a regular file") {
		t.Errorf("a device: %v", err)
	}
	// A sparse file just over the limit: refused before reading.
	big := filepath.Join(dir, "big.csv")
	fh, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(MaxFileBytes + 1); err != nil {
		t.Fatal("making a sparse file:", err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	f, rows, err := ReadFile(big, FormatAuto, "")
	want := big + ": the file is 1073741825 bytes; input files of at most 1073741824 bytes (1 GiB) are read"
	if err == nil || err.Error() != want || rows != nil || f != FormatAuto {
		t.Errorf("format %q, err %v", f, err)
	}
}

// Parse and ReadFile agree, and ReadFile names the file in its errors.
func TestReadFileIsParse(t *testing.T) {
	content := "input_string\n\"a\nb\"\n"
	path := writeFile(t, "in.csv", content)
	f1, rows1, err1 := ReadFile(path, FormatAuto, "")
	f2, rows2, err2 := Parse(path, []byte(content), FormatAuto, "")
	if err1 != nil || err2 != nil || f1 != f2 || len(rows1) != 1 || !reflect.DeepEqual(rows1, rows2) {
		t.Errorf("ReadFile %q %v %v; Parse %q %v %v", f1, rows1, err1, f2, rows2, err2)
	}
	path = writeFile(t, "in.csv", "a,b\n")
	if _, _, err := ReadFile(path, FormatAuto, ""); err == nil || !strings.HasPrefix(err.Error(), path+": the CSV header has no column") {
		t.Errorf("err %v", err)
	}
}
