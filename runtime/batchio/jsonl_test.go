package batchio

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestJSONLRows(t *testing.T) {
	content := "\xef\xbb\xbf" +
		`{"input_string": "hello"}` + "\r\n" +
		"\n" + // blank lines: skipped, not numbered
		"  \t\r\n" +
		`{"input_string": "日本語 🎉", "id": 7}` + "\n" +
		`{"input_string": "escaped \"quotes\",\nnewline \u00e9"}` + "\n" +
		`{"input_string": ""}` + "\n" +
		`  {"input_string": "spaces around"}  ` + "\n" +
		`{"input_string": "last, no newline"}`
	f, rows, err := readRows(t, "in.jsonl", content, FormatAuto, "")
	if err != nil || f != FormatJSONL {
		t.Fatalf("format %q, err %v", f, err)
	}
	checkRows(t, rows, []want{
		{Line: 1, Prompt: "hello"},
		{Line: 4, Prompt: "日本語 🎉"},
		{Line: 5, Prompt: "escaped \"quotes\",\nnewline é"},
		{Line: 6, Prompt: ""},
		{Line: 7, Prompt: "spaces around"},
		{Line: 8, Prompt: "last, no newline"},
	})
	checkRowInvariants(t, f, rows)

	// Another key.
	_, rows, err = readRows(t, "in.jsonl", `{"q": "the question", "input_string": "no"}`, FormatJSONL, "q")
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, rows, []want{{Line: 1, Prompt: "the question"}})

	// Empty files.
	for _, content := range []string{"", "\xef\xbb\xbf", "\n\n  \r\n"} {
		f, rows, err := readRows(t, "in.jsonl", content, FormatAuto, "")
		if err != nil || f != FormatJSONL || rows == nil && len(rows) != 0 {
			t.Errorf("%q: format %q, %d rows, err %v", content, f, len(rows), err)
		}
	}
}

func TestJSONLMalformedRows(t *testing.T) {
	long := strings.Repeat("x", MaxPromptBytes+1)
	content := `{"input_string": "good one"}` + "\n" +
		`not json` + "\n" +
		`["input_string", "an array"]` + "\n" +
		`"a string"` + "\n" +
		`null` + "\n" +
		`{"text": "no input_string"}` + "\n" +
		`{"input_string": null}` + "\n" +
		`{"input_string": 42}` + "\n" +
		`{"input_string": ["a", "list"]}` + "\n" +
		`{"input_string": "trailing"} {}` + "\n" +
		`{"input_string": "truncated"` + "\n" +
		"{\"input_string\": \"bad \xff utf-8\"}\n" +
		`{"input_string": "` + long + `"}` + "\n" +
		`{"input_string": "good two"}` + "\n"
	f, rows, err := readRows(t, "in.jsonl", content, FormatAuto, "")
	if err != nil || f != FormatJSONL {
		t.Fatalf("format %q, err %v", f, err)
	}
	checkRows(t, rows, []want{
		{Line: 1, Prompt: "good one"},
		{Line: 2, Err: "line 2: the line is not valid JSON: invalid character 'o' in literal null (expecting 'u') (column 2)"},
		{Line: 3, Err: "line 3: the line must be a JSON object (got an array)"},
		{Line: 4, Err: "line 4: the line must be a JSON object (got a string)"},
		{Line: 5, Err: "line 5: the line must be a JSON object (got null)"},
		{Line: 6, Err: `line 6: the line has no prompt: no key "input_string"`},
		{Line: 7, Err: `line 7: the prompt "input_string" is null; it must be a string`},
		{Line: 8, Err: `line 8: the prompt "input_string" must be a string (got a number)`},
		{Line: 9, Err: `line 9: the prompt "input_string" must be a string (got an array)`},
		{Line: 10, Err: "line 10: the line is not valid JSON: invalid character '{' after top-level value (column 30)"},
		{Line: 11, Err: "line 11: the line is not valid JSON: unexpected end of JSON input (column 28)"},
		{Line: 12, Err: "line 12: the line is not valid UTF-8"},
		{Line: 13, Err: "line 13: the prompt is 1048577 bytes long; prompts of at most 1048576 bytes (1 MiB) are allowed"},
		{Line: 14, Prompt: "good two"},
	})
	checkRowInvariants(t, f, rows)
}

func TestJSONLOverrides(t *testing.T) {
	content := `{"input_string": "all", "parameters": {"max_new_tokens": 100, "temperature": 0.7, "top_p": 0.9, "top_k": 50, "do_sample": true, "repetition_penalty": 1.1, "stop": ["\n", "END"], "seed": 42, "return_full_text": false, "ignore_eos": true, "num_return_sequences": 1}}
{"input_string": "none"}
{"input_string": "null parameters", "parameters": null}
{"input_string": "nulls", "parameters": {"max_new_tokens": null, "temperature": null, "stop": null, "seed": null}}
{"input_string": "stop string, whole floats", "parameters": {"stop": "###", "max_new_tokens": 100.0, "top_k": 5e1}}
{"input_string": "seeds", "parameters": {"seed": -1}}
{"input_string": "seeds", "parameters": {"seed": 18446744073709551615}}
{"input_string": "seeds", "parameters": {"seed": 1.8e19}}
{"input_string": "empty stop list", "parameters": {"stop": [], "foo": 1, "bar": {"x": 2}}}
`
	f, rows, err := readRows(t, "in.jsonl", content, FormatAuto, "")
	if err != nil || f != FormatJSONL {
		t.Fatalf("format %q, err %v", f, err)
	}
	want := []Overrides{
		{
			MaxNewTokens: ptr(100), Temperature: ptr(0.7), TopP: ptr(0.9), TopK: ptr(50), DoSample: ptr(true),
			RepetitionPenalty: ptr(1.1), Stop: []string{"\n", "END"}, Seed: ptr(uint64(42)),
			ReturnFullText: ptr(false), IgnoreEOS: ptr(true),
		},
		{},
		{},
		{},
		{Stop: []string{"###"}, MaxNewTokens: ptr(100), TopK: ptr(50)},
		{Seed: ptr(uint64(1<<64 - 1))},
		{Seed: ptr(uint64(1<<64 - 1))},
		{Seed: ptr(uint64(18000000000000000000))},
		{},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows:\n%s", len(rows), dump(rows))
	}
	for i, r := range rows {
		if r.Err != nil || !reflect.DeepEqual(r.Overrides, want[i]) {
			t.Errorf("row %d: err %v\n got %s\nwant %s", i, r.Err, showOverrides(r.Overrides), showOverrides(want[i]))
		}
	}
	if got := rows[8].Ignored; !reflect.DeepEqual(got, []string{"parameters.bar", "parameters.foo"}) {
		t.Errorf("ignored %q", got)
	}
	if rows[0].Ignored != nil {
		t.Errorf("ignored %q", rows[0].Ignored)
	}
	checkRowInvariants(t, f, rows)
}

func showOverrides(o Overrides) string {
	var b strings.Builder
	v := reflect.ValueOf(o)
	for i := range v.NumField() {
		f := v.Field(i)
		if f.IsNil() {
			continue
		}
		if f.Kind() == reflect.Pointer {
			f = f.Elem()
		}
		fmt.Fprintf(&b, "%s=%#v ", v.Type().Field(i).Name, f.Interface())
	}
	return "{" + strings.TrimSpace(b.String()) + "}"
}

func TestJSONLOverrideTypes(t *testing.T) {
	for _, c := range []struct{ params, err string }{
		{`"not an object"`, "parameters must be an object (got a string)"},
		{`[1]`, "parameters must be an object (got an array)"},
		{`{"max_new_tokens": "100"}`, "parameters.max_new_tokens must be an integer (got a string)"},
		{`{"max_new_tokens": 1.5}`, "parameters.max_new_tokens must be an integer (got 1.5)"},
		{`{"max_new_tokens": 1e30}`, "parameters.max_new_tokens is out of range (got 1e30)"},
		{`{"max_new_tokens": 99999999999999999999}`, "parameters.max_new_tokens is out of range (got 99999999999999999999)"},
		{`{"max_new_tokens": 1e400}`, "parameters.max_new_tokens is out of range (got 1e400)"},
		{`{"temperature": "hot"}`, "parameters.temperature must be a number (got a string)"},
		{`{"temperature": 1e400}`, "parameters.temperature is out of range (got 1e400)"},
		{`{"top_p": true}`, "parameters.top_p must be a number (got a boolean)"},
		{`{"top_k": 0.5}`, "parameters.top_k must be an integer (got 0.5)"},
		{`{"do_sample": "true"}`, "parameters.do_sample must be true or false (got a string)"},
		{`{"do_sample": 1}`, "parameters.do_sample must be true or false (got a number)"},
		{`{"repetition_penalty": {}}`, "parameters.repetition_penalty must be a number (got an object)"},
		{`{"stop": 5}`, "parameters.stop must be a string or an array of strings (got a number)"},
		{`{"stop": ["a", 5]}`, "parameters.stop[1] must be a string (got a number)"},
		{`{"stop": ["a", null]}`, "parameters.stop[1] must be a string (got null)"},
		{`{"seed": -9223372036854775808}`, ""},
		{`{"seed": "1"}`, "parameters.seed must be an integer (got a string)"},
		{`{"seed": 1.5}`, "parameters.seed must be an integer in [-2^63, 2^64-1] (got 1.5)"},
		{`{"seed": 18446744073709551616}`, "parameters.seed must be an integer in [-2^63, 2^64-1] (got 18446744073709551616)"},
		{`{"seed": -9223372036854775809}`, "parameters.seed must be an integer in [-2^63, 2^64-1] (got -9223372036854775809)"},
		{`{"return_full_text": "no"}`, "parameters.return_full_text must be true or false (got a string)"},
		{`{"ignore_eos": []}`, "parameters.ignore_eos must be true or false (got an array)"},
		{`{"num_return_sequences": 2}`, "parameters.num_return_sequences must be 1 in a batch (got 2): a row has one prediction"},
	} {
		content := `{"input_string": "p"}` + "\n" + `{"input_string": "p", "parameters": ` + c.params + "}\n"
		_, rows, err := readRows(t, "in.jsonl", content, FormatAuto, "")
		if err != nil {
			t.Fatal(err)
		}
		w := want{Line: 2, Prompt: "p"}
		if c.err != "" {
			w = want{Line: 2, Err: "line 2: " + c.err}
		}
		checkRows(t, rows, []want{{Line: 1, Prompt: "p"}, w})
	}
}
