package batchio

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// tricky are predictions and file names that test the quoting rule.
var tricky = []string{
	"", "plain", "with space", " leading space", "trailing space ", `\.`, `a\b`,
	"comma, inside", `"quoted"`, `say "hi"`, `"`, `""`, ",", "\n", "\r", "\r\n", "a\nb", "a\rb",
	"a\r\nb", "crlf at end\r\n", "lf at end\n", "ends with cr\r", "\"\n,\r", "日本語の予測", "emoji 🎉👍🏽",
	"tab\there", "#comment-like", "=formula()", "\x00nul", "bad \xff utf-8", "\ufeffbom",
	"x\u2028y",
}

func TestAppendPredictionGolden(t *testing.T) {
	for _, c := range []struct {
		row        int
		pred, file string
		want       string
	}{
		{0, "hello", "a.csv", "0,hello,a.csv\n"},
		{12, "", "", "12,,\n"},
		{1, " leading space", `dir\x.csv`, "1, leading space,dir\\x.csv\n"}, // encoding/csv's Writer would quote these
		{2, `\.`, "f", "2,\\.,f\n"},
		{3, "a, b", "f", "3,\"a, b\",f\n"},
		{4, `say "hi"`, "f", "4,\"say \"\"hi\"\"\",f\n"},
		{5, "two\nlines", "f", "5,\"two\nlines\",f\n"},
		{6, "cr\r", "f", "6,\"cr\r\",f\n"},
		{7, "crlf\r\n", "dir/with,comma.csv", "7,\"crlf\r\n\",\"dir/with,comma.csv\"\n"},
		{8, "日本語 🎉", "データ.csv", "8,日本語 🎉,データ.csv\n"},
		{-1, "x", "y", "-1,x,y\n"},
	} {
		if got := string(AppendPrediction(nil, c.row, c.pred, c.file)); got != c.want {
			t.Errorf("AppendPrediction(%d, %q, %q) = %q, want %q", c.row, c.pred, c.file, got, c.want)
		}
	}
	// It appends.
	if got := string(AppendPrediction([]byte("0,a,b\n"), 1, "c", "d")); got != "0,a,b\n1,c,d\n" {
		t.Errorf("got %q", got)
	}
}

// Every line, and a file of all of them, reads back through
// encoding/csv's Reader to the same fields (but for its "\r\n" → "\n").
func TestAppendPredictionRoundTrip(t *testing.T) {
	var file []byte
	var wants [][]string
	for i, pred := range tricky {
		for j, name := range tricky {
			row := i*len(tricky) + j
			line := AppendPrediction(nil, row, pred, name)
			want := []string{strconv.Itoa(row), csvNormalized(pred), csvNormalized(name)}
			if got := readCSV(t, line); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
				t.Errorf("%q reads back as %q, want %q", line, got, want)
			}
			file = append(file, line...)
			wants = append(wants, want)
		}
	}
	path := filepath.Join(t.TempDir(), "predictions.csv")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := readCSV(t, data); !reflect.DeepEqual(got, wants) {
		t.Errorf("the file reads back differently")
	}
}

// csvNormalized is s as encoding/csv's Reader returns it from a quoted
// field: "\r\n" becomes "\n".
func csvNormalized(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }

func readCSV(t testing.TB, data []byte) [][]string {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = 3
	var recs [][]string
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return recs
		}
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		recs = append(recs, rec)
	}
}

func TestAppendOpenAIResultGolden(t *testing.T) {
	for _, c := range []struct {
		r    OpenAIResult
		want string
	}{
		{
			OpenAIResult{
				ID: "batch_req_0123abcd", CustomID: "request-1", StatusCode: 200, RequestID: "req_42",
				Body: json.RawMessage(`{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi <b>&</b>"}}]}`),
			},
			`{"id":"batch_req_0123abcd","custom_id":"request-1","response":{"status_code":200,"request_id":"req_42","body":{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi <b>&</b>"}}]}},"error":null}` + "\n",
		},
		{
			OpenAIResult{ID: "batch_req_1", CustomID: "request-2", ErrCode: "invalid_request", ErrMessage: "line 2: body.n must be 1"},
			`{"id":"batch_req_1","custom_id":"request-2","response":null,"error":{"code":"invalid_request","message":"line 2: body.n must be 1"}}` + "\n",
		},
		{ // An error wins over a body; the error's message alone makes a failure.
			OpenAIResult{ID: "i", CustomID: "c", StatusCode: 200, RequestID: "r", Body: json.RawMessage(`{}`), ErrMessage: "timed out"},
			`{"id":"i","custom_id":"c","response":null,"error":{"code":"","message":"timed out"}}` + "\n",
		},
		{ // No body.
			OpenAIResult{ID: "i", CustomID: "c", StatusCode: 200, RequestID: "r"},
			`{"id":"i","custom_id":"c","response":{"status_code":200,"request_id":"r","body":null},"error":null}` + "\n",
		},
		{ // Strings escaped as encoding/json escapes them, without HTML escaping.
			OpenAIResult{ID: "<&>", CustomID: "q\"b\\s\n\r\t\b\f\x00\x1f\x7f é 日本 🎉 \u2028\u2029 \xff", StatusCode: 200, RequestID: "", Body: json.RawMessage(" \"x\" ")},
			`{"id":"<&>","custom_id":"q\"b\\s\n\r\t\b\f\u0000\u001f` + "\x7f é 日本 🎉 " + `\u2028\u2029 \ufffd","response":{"status_code":200,"request_id":"","body":"x"},"error":null}` + "\n",
		},
		{ // A body that is not JSON is not written.
			OpenAIResult{ID: "i", CustomID: "c", StatusCode: 200, Body: json.RawMessage(`{"a":`)},
			`{"id":"i","custom_id":"c","response":null,"error":{"code":"invalid_response_body","message":"the response body is not valid JSON: unexpected end of JSON input"}}` + "\n",
		},
	} {
		got := AppendOpenAIResult(nil, c.r)
		if string(got) != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
		if !json.Valid(bytes.TrimSuffix(got, []byte("\n"))) || bytes.Count(got, []byte("\n")) != 1 {
			t.Errorf("not one JSON line: %q", got)
		}
		// Equal inputs, equal bytes; and it appends.
		again := AppendOpenAIResult([]byte("prefix"), c.r)
		if string(again) != "prefix"+c.want {
			t.Errorf("appended %q", again)
		}
	}
}

// appendJSONString escapes as encoding/json does with SetEscapeHTML(false).
func TestAppendJSONString(t *testing.T) {
	for _, s := range append(tricky, "<script>&amp;</script>", "\u2028", "\xe2\x80", "\xed\xa0\x80", strings.Repeat("\x01", 3)) {
		if got, want := string(appendJSONString(nil, s)), encodingJSON(s); got != want {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	}
}

func encodingJSON(s string) string {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(s); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}
