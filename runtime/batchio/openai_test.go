package batchio

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestOpenAIRows(t *testing.T) {
	content := `{"custom_id": "chat-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "llama", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi, 日本"}], "max_tokens": 100}}
{"custom_id": "cmpl-1", "method": "POST", "url": "/v1/completions", "body": {"model": "llama", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.8, "top_p": 0.95, "stop": "\n", "seed": 7, "n": 1, "echo": true}}

{"custom_id": "chat-2", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, {"role": "user", "content": "q"}, {"role": "assistant", "content": null}, {"role": "user", "content": "q2", "name": "bob"}], "max_tokens": 5, "max_completion_tokens": 9, "temperature": 0, "top_k": -1, "repetition_penalty": 1.2, "ignore_eos": false, "stop": ["x", "y"], "stream": false, "logprobs": false, "tools": [], "tool_choice": "none", "presence_penalty": 0, "response_format": {"type": "text"}, "extra": 1}, "extra_top": true}
`
	f, rows, err := readRows(t, "batch.jsonl", content, FormatAuto, "")
	if err != nil || f != FormatOpenAI {
		t.Fatalf("format %q, err %v", f, err)
	}
	want := []Row{
		{
			Number: 0, Line: 1, CustomID: "chat-1", URL: URLChat,
			Messages:  []Message{{"system", "Be brief."}, {"user", "Hi, 日本"}},
			Overrides: Overrides{MaxNewTokens: ptr(100)},
		},
		{
			Number: 1, Line: 2, CustomID: "cmpl-1", URL: URLCompletion, Prompt: "Once upon a time",
			Overrides: Overrides{
				MaxNewTokens: ptr(16), Temperature: ptr(0.8), DoSample: ptr(true), TopP: ptr(0.95),
				Stop: []string{"\n"}, Seed: ptr(uint64(7)), ReturnFullText: ptr(true),
			},
		},
		{
			Number: 2, Line: 4, CustomID: "chat-2", URL: URLChat,
			Messages: []Message{{"system", "a\nb"}, {"user", "q"}, {"assistant", ""}, {"user", "q2"}},
			Overrides: Overrides{
				MaxNewTokens: ptr(9), Temperature: ptr(0.0), DoSample: ptr(false), TopK: ptr(0),
				RepetitionPenalty: ptr(1.2), IgnoreEOS: ptr(false), Stop: []string{"x", "y"},
			},
			Ignored: []string{"body.extra", "extra_top"},
		},
	}
	if !reflect.DeepEqual(rows, want) {
		for i := range max(len(rows), len(want)) {
			var g, w Row
			if i < len(rows) {
				g = rows[i]
			}
			if i < len(want) {
				w = want[i]
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("row %d:\n got %+v %s\nwant %+v %s", i, g, showOverrides(g.Overrides), w, showOverrides(w.Overrides))
			}
		}
	}
	checkRowInvariants(t, f, rows)
}

func TestOpenAIMalformedRows(t *testing.T) {
	chat := func(id, body string) string {
		return `{"custom_id": "` + id + `", "method": "POST", "url": "/v1/chat/completions", "body": ` + body + "}\n"
	}
	cmpl := func(id, body string) string {
		return `{"custom_id": "` + id + `", "method": "POST", "url": "/v1/completions", "body": ` + body + "}\n"
	}
	msgs := `"messages": [{"role": "user", "content": "hi"}]`
	lines := []struct{ line, id, url, err string }{
		{chat("a", "{"+msgs+"}"), "a", URLChat, ""},
		{chat("a", "{"+msgs+"}"), "a", URLChat, `custom_id "a" is a duplicate of line 1's; custom_ids must be unique in a file`},
		{`{"method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}` + "\n", "", "", "the request has no custom_id"},
		{`{"custom_id": 5, "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}` + "\n", "", "", "custom_id must be a string (got a number)"},
		{`{"custom_id": "", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}` + "\n", "", "", "custom_id is empty"},
		{`{"custom_id": "m", "method": "GET", "url": "/v1/completions", "body": {"prompt": "p"}}` + "\n", "m", URLCompletion, `method must be "POST" (got "GET")`},
		{`{"custom_id": "m2", "url": "/v1/completions", "body": {"prompt": "p"}}` + "\n", "m2", URLCompletion, `the request has no method; want "POST"`},
		{`{"custom_id": "u", "method": "POST", "url": "/v1/embeddings", "body": {"input": "p"}}` + "\n", "u", "/v1/embeddings", `url "/v1/embeddings" is not supported; want "/v1/chat/completions" or "/v1/completions"`},
		{`{"custom_id": "u2", "method": "POST", "body": {"prompt": "p"}}` + "\n", "u2", "", `the request has no url; want "/v1/chat/completions" or "/v1/completions"`},
		{`{"custom_id": "b", "method": "POST", "url": "/v1/completions"}` + "\n", "b", URLCompletion, "the request has no body"},
		{`{"custom_id": "b2", "method": "POST", "url": "/v1/completions", "body": "p"}` + "\n", "b2", URLCompletion, "body must be an object (got a string)"},
		{chat("c1", `{}`), "c1", URLChat, `body.messages is required: a list of {"role", "content"} objects`},
		{chat("c2", `{"messages": []}`), "c2", URLChat, "body.messages is empty; give at least one message"},
		{chat("c3", `{"messages": "hi"}`), "c3", URLChat, "body.messages must be an array (got a string)"},
		{chat("c4", `{"messages": ["hi"]}`), "c4", URLChat, "body.messages[0] must be an object (got a string)"},
		{chat("c5", `{"messages": [{"content": "hi"}]}`), "c5", URLChat, "body.messages[0].role is required: a non-empty string"},
		{chat("c6", `{"messages": [{"role": "user", "content": 5}]}`), "c6", URLChat, "body.messages[0].content must be a string or a list of text parts (got a number)"},
		{chat("c7", `{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}`), "c7", URLChat, `body.messages[0].content[0].type is "image_url"; only text parts are supported`},
		{chat("c8", `{`+msgs+`, "n": 2}`), "c8", URLChat, "body.n must be 1 in a batch (got 2): a row has one answer"},
		{chat("c9", `{`+msgs+`, "logprobs": true}`), "c9", URLChat, "body.logprobs is not supported (got true)"},
		{chat("c10", `{`+msgs+`, "tools": [{"type": "function"}]}`), "c10", URLChat, `body.tools is not supported (got [{"type": "function"}])`},
		{chat("c11", `{`+msgs+`, "frequency_penalty": 0.5}`), "c11", URLChat, "body.frequency_penalty is not supported (got 0.5)"},
		{chat("c12", `{`+msgs+`, "response_format": {"type": "json_object"}}`), "c12", URLChat, `body.response_format is not supported (got {"type": "json_object"})`},
		{chat("c13", `{`+msgs+`, "max_tokens": "many"}`), "c13", URLChat, "body.max_tokens must be an integer (got a string)"},
		{chat("c14", `{`+msgs+`, "temperature": "0"}`), "c14", URLChat, "body.temperature must be a number (got a string)"},
		{chat("c15", `{`+msgs+`, "min_tokens": 3}`), "c15", URLChat, "body.min_tokens is not supported (got 3)"},
		{cmpl("p1", `{"prompt": ["a", "b"]}`), "p1", URLCompletion, "body.prompt must be a string (got an array); lists of prompts and token ids are not supported in a batch"},
		{cmpl("p2", `{}`), "p2", URLCompletion, "body.prompt is required: a string"},
		{cmpl("p3", `{"prompt": "p", "logprobs": 2}`), "p3", URLCompletion, "body.logprobs is not supported (got 2)"},
		{cmpl("p4", `{"prompt": "p", "best_of": 3}`), "p4", URLCompletion, "body.best_of is not supported (got 3)"},
		{cmpl("p5", `{"prompt": "p", "suffix": "s"}`), "p5", URLCompletion, `body.suffix is not supported (got "s")`},
		{cmpl("p6", `{"prompt": "p", "echo": 1}`), "p6", URLCompletion, "body.echo must be true or false (got a number)"},
		{cmpl("p7", `{"prompt": "`+strings.Repeat("z", MaxPromptBytes+1)+`"}`), "p7", URLCompletion, "the prompt is 1048577 bytes long; prompts of at most 1048576 bytes (1 MiB) are allowed"},
		{chat("p8", `{"messages": [{"role": "user", "content": "`+strings.Repeat("z", MaxPromptBytes/2)+`"}, {"role": "user", "content": "`+strings.Repeat("z", MaxPromptBytes/2+1)+`"}]}`), "p8", URLChat, "the messages' contents are over 1048576 bytes (1 MiB) long; at most that is allowed"},
		{"not json\n", "", "", "the line is not valid JSON: invalid character 'o' in literal null (expecting 'u') (column 2)"},
		{cmpl("ok", `{"prompt": "fine", "best_of": 1, "suffix": "", "logprobs": null}`), "ok", URLCompletion, ""},
	}
	var content strings.Builder
	for _, l := range lines {
		content.WriteString(l.line)
	}
	f, rows, err := readRows(t, "batch.jsonl", content.String(), FormatAuto, "")
	if err != nil || f != FormatOpenAI {
		t.Fatalf("format %q, err %v", f, err)
	}
	if len(rows) != len(lines) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(lines), dump(rows))
	}
	for i, r := range rows {
		l := lines[i]
		err := ""
		if r.Err != nil {
			err = r.Err.Error()
		}
		wantErr := ""
		if l.err != "" {
			wantErr = "line " + strconv.Itoa(i+1) + ": " + l.err
		}
		if r.Number != i || r.Line != i+1 || r.CustomID != l.id || r.URL != l.url || err != wantErr {
			t.Errorf("row %d: number %d line %d custom_id %q url %q err %s\nwant custom_id %q url %q err %s", i, r.Number, r.Line, r.CustomID, r.URL, err, l.id, l.url, wantErr)
		}
	}
	checkRowInvariants(t, f, rows)
}

// A failed row keeps its custom_id: a later row with it is a duplicate.
func TestOpenAIDuplicateOfFailedRow(t *testing.T) {
	content := `{"custom_id": "x", "method": "POST", "url": "/v1/completions", "body": {"prompt": 1}}
{"custom_id": "x", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}
{"custom_id": "y", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}
{"custom_id": "x", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}
`
	_, rows, err := readRows(t, "batch.jsonl", content, FormatOpenAI, "")
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, rows, []want{
		{Line: 1, Err: "line 1: body.prompt must be a string (got a number); lists of prompts and token ids are not supported in a batch"},
		{Line: 2, Err: `line 2: custom_id "x" is a duplicate of line 1's; custom_ids must be unique in a file`},
		{Line: 3, Prompt: "p"},
		{Line: 4, Err: `line 4: custom_id "x" is a duplicate of line 1's; custom_ids must be unique in a file`},
	})
}

// --format jsonl reads an OpenAI batch file as one; openai forces it.
func TestOpenAIFormats(t *testing.T) {
	line := `{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}}` + "\n"
	for _, f := range []Format{FormatAuto, FormatJSONL, FormatOpenAI, ""} {
		got, rows, err := readRows(t, "x.txt", line, f, "")
		if err != nil || got != FormatOpenAI || len(rows) != 1 || rows[0].Prompt != "p" || rows[0].CustomID != "a" {
			t.Errorf("%q: format %q, err %v, rows:\n%s", f, got, err, dump(rows))
		}
	}
	got, rows, err := readRows(t, "x.jsonl", `{"input_string": "p"}`, FormatOpenAI, "")
	if err != nil || got != FormatOpenAI || len(rows) != 1 || rows[0].Err == nil || rows[0].Err.Error() != "line 1: the request has no custom_id" {
		t.Errorf("format %q, err %v, rows:\n%s", got, err, dump(rows))
	}
	got, rows, err = readRows(t, "x.jsonl", line, FormatCSV, "")
	if err == nil || got != FormatCSV || rows != nil {
		t.Errorf("format %q, err %v", got, err)
	}
	if _, _, err := readRows(t, "x.jsonl", line, Format("xml"), ""); err == nil || !strings.Contains(err.Error(), `unknown input format "xml"`) {
		t.Errorf("err %v", err)
	}
}
