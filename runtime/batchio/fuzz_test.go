package batchio

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// parseChecked parses data, checks the rows' invariants and, when twice
// is set, that a second parse gives the same, and returns the result.
func parseChecked(t *testing.T, name string, data []byte, f Format, column string, twice bool) (Format, []Row, error) {
	t.Helper()
	got, rows, err := Parse(name, data, f, column)
	if err != nil {
		if rows != nil {
			t.Fatalf("rows with an error: %v", err)
		}
		return got, rows, err
	}
	checkRowInvariants(t, got, rows)
	if !twice {
		return got, rows, err
	}
	got2, rows2, err2 := Parse(name, bytes.Clone(data), f, column)
	if got2 != got || err2 != nil || !reflect.DeepEqual(rows, rows2) {
		t.Fatalf("a second parse differs")
	}
	return got, rows, err
}

func FuzzParseCSV(f *testing.F) {
	f.Add([]byte("input_string\nhello\n"), "a\x00b")
	f.Add([]byte("\xef\xbb\xbfid,input_string\r\n1,\"a, b\"\r\n2,\"x\"\"y\"\r\n3,\"two\nlines\"\r\n"), "with, comma\x00\"quoted\"\x00two\r\nlines")
	f.Add([]byte("id,text\n1,a\"b\n2,\"c\"d\n3,\"never closed\n4,x\n"), "日本語\x00🎉")
	f.Add([]byte("input_string,n\ntoo,many,fields\n\n,\n\"\"\n"), "")
	f.Add([]byte("a,b\n1,2\n"), "\xff")
	f.Fuzz(func(t *testing.T, data []byte, prompts string) {
		// Any bytes: no panic, and the invariants.
		for _, column := range []string{"", "text", "b"} {
			if got, _, _ := parseChecked(t, "in.csv", data, FormatCSV, column, column == ""); got != FormatCSV {
				t.Fatalf("format %q", got)
			}
		}
		_, _, _ = parseChecked(t, "in", data, FormatAuto, "", false) // checked inside

		// A file written from the prompts reads back to them.
		list := strings.Split(prompts, "\x00")
		file := []byte("id,input_string\n")
		for i, p := range list {
			file = strconv.AppendInt(file, int64(i), 10)
			file = append(file, ',')
			file = appendCSVField(file, p)
			file = append(file, "\r\n"...)
		}
		_, rows, err := parseChecked(t, "in.csv", file, FormatCSV, "", false)
		if err != nil {
			if strings.Contains(err.Error(), "bytes long; lines of at most") {
				return
			}
			t.Fatalf("%q: %v", file, err)
		}
		if len(rows) != len(list) {
			t.Fatalf("%q: %d rows from %d prompts", file, len(rows), len(list))
		}
		for i, p := range list {
			r := rows[i]
			switch {
			case !utf8.ValidString(p) || len(csvNormalized(p)) > MaxPromptBytes:
				if r.Err == nil {
					t.Fatalf("row %d: %q read without an error", i, p)
				}
			case r.Err != nil || r.Prompt != csvNormalized(p):
				t.Fatalf("row %d: %q read as %q, %v", i, p, r.Prompt, r.Err)
			}
		}
	})
}

// nonBlankLines counts data's lines that hold more than spaces, tabs
// and CRs (after a BOM).
func nonBlankLines(data []byte) int {
	n := 0
	for _, l := range strings.Split(strings.TrimPrefix(string(data), "\ufeff"), "\n") {
		if strings.Trim(l, " \t\r") != "" {
			n++
		}
	}
	return n
}

func FuzzParseJSONL(f *testing.F) {
	f.Add([]byte(`{"input_string": "hello", "parameters": {"max_new_tokens": 5, "stop": ["a"], "seed": -1}}`+"\n\n"+`{"input_string": 5}`), "prompt")
	f.Add([]byte(`{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}}`+"\r\n"+
		`{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p", "n": 2}}`+"\n"+
		`{"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p", "echo": true, "stop": "x"}}`), "日本語 🎉")
	f.Add([]byte("\xef\xbb\xbf[1]\nnull\n{\"input_string\": \"\xff\"}\n  \n{"), "\u2028\"\\\n")
	f.Add([]byte(`{"custom_id": "c", "method": "GET", "url": "/v1/embeddings", "body": {"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}]}]}}`), "")
	f.Fuzz(func(t *testing.T, data []byte, prompt string) {
		// Any bytes: no panic, and the invariants, in each JSON format.
		for _, format := range []Format{FormatJSONL, FormatOpenAI, FormatAuto} {
			name := "in.jsonl"
			if format == FormatAuto {
				name = "in" // sniffed
			}
			got, rows, err := parseChecked(t, name, data, format, "", format == FormatJSONL)
			if format == FormatAuto && got == FormatCSV {
				if i := bytes.IndexFunc(bytes.TrimPrefix(data, bom), func(r rune) bool { return !isSpace(r) }); i >= 0 && bytes.TrimPrefix(data, bom)[i] == '{' {
					t.Fatalf("sniffed as CSV, but the first non-blank byte is '{'")
				}
				continue
			}
			if err != nil {
				if !strings.Contains(err.Error(), "bytes long; lines of at most") {
					t.Fatalf("%s: %v", format, err)
				}
				continue
			}
			if got == FormatCSV || format == FormatOpenAI && got != FormatOpenAI || format == FormatJSONL && got != jsonlOrOpenAI(bytes.TrimPrefix(data, bom)) {
				t.Fatalf("%s read as %s", format, got)
			}
			if n := nonBlankLines(data); len(rows) != n {
				t.Fatalf("%s: %d rows from %d non-blank lines", format, len(rows), n)
			}
		}

		// A line written from the prompt reads back to it.
		if !utf8.ValidString(prompt) {
			return
		}
		line, _ := json.Marshal(map[string]any{
			"input_string": prompt,
			"parameters":   map[string]any{"stop": []string{prompt}, "max_new_tokens": len(prompt)},
		})
		_, rows, err := parseChecked(t, "in.jsonl", line, FormatAuto, "", false)
		if err != nil || len(rows) != 1 {
			t.Fatalf("%s: %d rows, %v", line, len(rows), err)
		}
		r := rows[0]
		if len(prompt) > MaxPromptBytes {
			if r.Err == nil {
				t.Fatalf("a prompt of %d bytes read", len(prompt))
			}
		} else if r.Err != nil || r.Prompt != prompt || !reflect.DeepEqual(r.Overrides.Stop, []string{prompt}) || *r.Overrides.MaxNewTokens != len(prompt) {
			t.Fatalf("%s: read %+v", line, r)
		}

		// And as an OpenAI request, the prompt as custom_id and content.
		line, _ = json.Marshal(map[string]any{
			"custom_id": prompt, "method": "POST", "url": URLChat,
			"body": map[string]any{"messages": []map[string]string{{"role": "user", "content": prompt}}},
		})
		_, rows, err = parseChecked(t, "in", line, FormatAuto, "", false)
		if err != nil || len(rows) != 1 {
			t.Fatalf("%s: %d rows, %v", line, len(rows), err)
		}
		r = rows[0]
		if prompt == "" || len(prompt) > MaxPromptBytes {
			if r.Err == nil {
				t.Fatalf("%s read", line)
			}
		} else if r.Err != nil || r.CustomID != prompt || r.URL != URLChat || len(r.Messages) != 1 || r.Messages[0] != (Message{"user", prompt}) {
			t.Fatalf("%s: read %+v", line, r)
		}
	})
}

func FuzzAppendPrediction(f *testing.F) {
	for i, s := range tricky {
		f.Add(i, s, tricky[len(tricky)-1-i])
	}
	f.Fuzz(func(t *testing.T, row int, pred, file string) {
		line := AppendPrediction(nil, row, pred, file)
		// Quoted exactly when it must be.
		plain := strconv.Itoa(row) + "," + pred + "," + file + "\n"
		mustQuote := strings.ContainsAny(pred, ",\"\r\n") || strings.ContainsAny(file, ",\"\r\n")
		if (string(line) == plain) == mustQuote {
			t.Fatalf("%q: quoted %v, must quote %v", line, string(line) != plain, mustQuote)
		}
		want := []string{strconv.Itoa(row), csvNormalized(pred), csvNormalized(file)}
		if got := readCSV(t, line); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Fatalf("%q reads back as %q, want %q", line, got, want)
		}
		// Two lines in a file: two records.
		two := AppendPrediction(line, row+1, file, pred)
		want2 := []string{strconv.Itoa(row + 1), csvNormalized(file), csvNormalized(pred)}
		if got := readCSV(t, two); len(got) != 2 || !reflect.DeepEqual(got[0], want) || !reflect.DeepEqual(got[1], want2) {
			t.Fatalf("%q reads back as %q", two, got)
		}
	})
}

func FuzzAppendOpenAIResult(f *testing.F) {
	f.Add("batch_req_1", "c", 200, "r", []byte(`{"a": [1, 2, {"b": "<&>"}]}`), "", "")
	f.Add("i", "c\u2028\xff", 0, "", []byte(nil), "code", "message \"quoted\"\n")
	f.Add("i", "c", 200, "r", []byte(`{"a":`), "", "")
	f.Fuzz(func(t *testing.T, id, customID string, status int, requestID string, body []byte, code, msg string) {
		r := OpenAIResult{ID: id, CustomID: customID, StatusCode: status, RequestID: requestID, Body: body, ErrCode: code, ErrMessage: msg}
		line := AppendOpenAIResult(nil, r)
		if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 || !json.Valid(line) || !utf8.Valid(line) {
			t.Fatalf("not one JSON line: %q", line)
		}
		if again := AppendOpenAIResult(nil, r); !bytes.Equal(again, line) {
			t.Fatalf("not deterministic: %q, %q", line, again)
		}
		var got struct {
			ID       *string `json:"id"`
			CustomID *string `json:"custom_id"`
			Response *struct {
				StatusCode int             `json:"status_code"`
				RequestID  string          `json:"request_id"`
				Body       json.RawMessage `json:"body"`
			} `json:"response"`
			Error *struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatal(err)
		}
		if got.ID == nil || got.CustomID == nil {
			t.Fatalf("no id or custom_id: %s", line)
		}
		if utf8.ValidString(id) && *got.ID != id {
			t.Fatalf("id %q from %q", *got.ID, id)
		}
		if utf8.ValidString(customID) && *got.CustomID != customID {
			t.Fatalf("custom_id %q from %q", *got.CustomID, customID)
		}
		if (got.Response == nil) == (got.Error == nil) {
			t.Fatalf("response and error: %s", line)
		}
		if r.Failed() && (got.Error == nil || utf8.ValidString(msg) && got.Error.Message != msg) {
			t.Fatalf("a failure written as %s", line)
		}
		if got.Response != nil {
			if got.Response.StatusCode != status || utf8.ValidString(requestID) && got.Response.RequestID != requestID {
				t.Fatalf("response %s", line)
			}
			var want bytes.Buffer
			if len(bytes.TrimSpace(body)) == 0 {
				want.WriteString("null")
			} else if err := json.Compact(&want, body); err != nil {
				t.Fatalf("an invalid body written: %s", line)
			}
			if !bytes.Equal(got.Response.Body, want.Bytes()) {
				t.Fatalf("body %s, want %s", got.Response.Body, want.Bytes())
			}
		}
		for _, s := range []string{id, customID, requestID, code, msg} {
			if got, want := string(appendJSONString(nil, s)), encodingJSON(s); got != want {
				t.Fatalf("%q escaped %s, want %s", s, got, want)
			}
		}
	})
}
