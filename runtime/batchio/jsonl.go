package batchio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/leo-operator/leo/runtime/jsonvalue"
)

// record is one non-blank line of a JSONL file.
type record struct {
	line int    // 1-based
	text []byte // without its line ending
}

// blank reports whether line holds only spaces, tabs and CRs.
func blank(line []byte) bool {
	for _, c := range line {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// records splits data into its non-blank lines.
func records(data []byte) []record {
	// Counted first: one allocation, and none for blank lines.
	count := 0
	for rest := data; len(rest) > 0; {
		var line []byte
		line, rest = cutLine(rest)
		if !blank(line) {
			count++
		}
	}
	recs := make([]record, 0, count)
	for n, rest := 1, data; len(rest) > 0; n++ {
		var line []byte
		line, rest = cutLine(rest)
		if !blank(line) {
			recs = append(recs, record{line: n, text: bytes.TrimSuffix(line, []byte("\r"))})
		}
	}
	return recs
}

// cutLine returns data's first line, without its "\n", and the rest.
func cutLine(data []byte) (line, rest []byte) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return data[:i], data[i+1:]
	}
	return data, nil
}

// object is one JSON object of a line, read a key at a time
// (jsonvalue.Object): a wrong type is reported with the key's path, and
// the keys nothing read are known. Its methods return row errors.
type object struct{ *jsonvalue.Object }

// rowError is a row's error; its text is the message after "line N: ".
type rowError struct{ msg string }

func (e *rowError) Error() string { return e.msg }

func fail(format string, args ...any) error { return &rowError{fmt.Sprintf(format, args...)} }

// rowErr is a field's error as a row's; nil for none (not a typed nil).
func rowErr(e *jsonvalue.FieldError) error {
	if e == nil {
		return nil
	}
	return &rowError{e.Msg}
}

// parseObject parses a line as a JSON object.
func parseObject(text []byte) (*object, error) {
	if !utf8.Valid(text) {
		return nil, fail("the line is not valid UTF-8")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(text, &m); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, fail("the line is not valid JSON: %v (column %d)", syn, max(syn.Offset, 1))
		}
		return nil, fail("the line must be a JSON object (got %s)", jsonvalue.Kind(text))
	}
	if m == nil {
		return nil, fail("the line must be a JSON object (got null)")
	}
	return &object{jsonvalue.FromMap("", m)}, nil
}

// strs, boolean, number, integer, seed and str are jsonvalue.Object's
// readers with row errors.
func (o *object) strs(k string) ([]string, error) {
	v, err := o.Strings(k)
	return v, rowErr(err)
}

func (o *object) boolean(k string) (*bool, error) {
	v, err := o.Bool(k)
	return v, rowErr(err)
}

func (o *object) number(k string) (*float64, error) {
	v, err := o.Number(k)
	return v, rowErr(err)
}

func (o *object) integer(k string) (*int, error) {
	v, err := o.Int(k)
	return v, rowErr(err)
}

func (o *object) seed(k string) (*uint64, error) {
	v, err := o.Seed(k)
	return v, rowErr(err)
}

func (o *object) typeError(k, want string, raw []byte) error {
	return fail("%s must be %s (got %s)", o.Key(k), want, jsonvalue.Kind(raw))
}

func (o *object) str(k string) (string, bool, error) {
	s, ok, err := o.String(k)
	return s, ok, rowErr(err)
}

// object returns field k as an object; nil when not given.
func (o *object) object(k string) (*object, error) {
	v, err := o.Object.Object(k)
	if err != nil || v == nil {
		return nil, rowErr(err)
	}
	return &object{v}, nil
}

func objectAt(path string, raw json.RawMessage) (*object, error) {
	v, err := jsonvalue.NewObject(path, raw)
	if err != nil {
		return nil, rowErr(err)
	}
	return &object{v}, nil
}

func ptr[T any](v T) *T { return &v }

// lineError prefixes a row error with its line.
func lineError(line int, err error) error {
	return fmt.Errorf("line %d: %w", line, err)
}

// parseJSONL reads data (its BOM already gone) as JSONL prompts.
func parseJSONL(data []byte, column string) []Row {
	recs := records(data)
	rows := make([]Row, 0, len(recs))
	for i, rec := range recs {
		row := Row{Number: i, Line: rec.line}
		if err := jsonlRow(&row, rec.text, column); err != nil {
			row = Row{Number: i, Line: rec.line, Err: lineError(rec.line, err)}
		}
		rows = append(rows, row)
	}
	return rows
}

// jsonlRow fills row from one JSONL line.
func jsonlRow(row *Row, text []byte, column string) error {
	o, err := parseObject(text)
	if err != nil {
		return err
	}
	v, ok := o.Raw(column)
	if !ok {
		if o.Present(column) {
			return fail("the prompt %q is null; it must be a string", column)
		}
		return fail("the line has no prompt: no key %q", column)
	}
	if jsonvalue.Kind(v) != "a string" || json.Unmarshal(v, &row.Prompt) != nil {
		return fail("the prompt %q must be a string (got %s)", column, jsonvalue.Kind(v))
	}
	if len(row.Prompt) > MaxPromptBytes {
		return promptTooLong0(len(row.Prompt))
	}
	p, err := o.object("parameters")
	if err != nil {
		return err
	}
	if p == nil {
		return nil
	}
	ov := &row.Overrides
	if ov.MaxNewTokens, err = p.integer("max_new_tokens"); err != nil {
		return err
	}
	if ov.Temperature, err = p.number("temperature"); err != nil {
		return err
	}
	if ov.TopP, err = p.number("top_p"); err != nil {
		return err
	}
	if ov.TopK, err = p.integer("top_k"); err != nil {
		return err
	}
	if ov.DoSample, err = p.boolean("do_sample"); err != nil {
		return err
	}
	if ov.RepetitionPenalty, err = p.number("repetition_penalty"); err != nil {
		return err
	}
	if ov.Stop, err = p.strs("stop"); err != nil {
		return err
	}
	if ov.Seed, err = p.seed("seed"); err != nil {
		return err
	}
	if ov.ReturnFullText, err = p.boolean("return_full_text"); err != nil {
		return err
	}
	if ov.IgnoreEOS, err = p.boolean("ignore_eos"); err != nil {
		return err
	}
	n, err := p.integer("num_return_sequences")
	if err != nil {
		return err
	}
	if n != nil && *n != 1 {
		return fail("parameters.num_return_sequences must be 1 in a batch (got %d): a row has one prediction", *n)
	}
	row.Ignored = sorted(p.Ignored(nil))
	return nil
}

// promptTooLong0 is promptTooLong without the line (lineError adds it).
func promptTooLong0(n int) error {
	return fail("the prompt is %d bytes long; prompts of at most %d bytes (1 MiB) are allowed", n, MaxPromptBytes)
}

func sorted(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	slices.Sort(s)
	return s
}

// parseOpenAI reads data (its BOM already gone) as OpenAI batch requests.
func parseOpenAI(data []byte) []Row {
	recs := records(data)
	rows := make([]Row, 0, len(recs))
	seen := map[string]int{} // custom_id → the line of its first row
	for i, rec := range recs {
		row := Row{Number: i, Line: rec.line}
		if err := openAIRow(&row, rec.text, seen); err != nil {
			// Keep what identifies the request (for the error line), drop the rest.
			row = Row{Number: i, Line: rec.line, CustomID: row.CustomID, URL: row.URL, Err: lineError(rec.line, err)}
		}
		rows = append(rows, row)
	}
	return rows
}

// openAIRow fills row from one OpenAI batch request line; row.CustomID
// and row.URL are set as soon as they are read, also when it fails.
func openAIRow(row *Row, text []byte, seen map[string]int) error {
	o, err := parseObject(text)
	if err != nil {
		return err
	}
	id, ok, err := o.str("custom_id")
	switch {
	case err != nil:
		return err
	case !ok:
		return fail("the request has no custom_id")
	case id == "":
		return fail("custom_id is empty")
	}
	row.CustomID = id
	first, dup := seen[id]
	if !dup {
		seen[id] = row.Line
	}
	url, ok, err := o.str("url")
	if ok {
		row.URL = url
	}
	switch {
	case dup:
		return fail("custom_id %q is a duplicate of line %d's; custom_ids must be unique in a file", clipString(id), first)
	case err != nil:
		return err
	case !ok:
		return fail("the request has no url; want %q or %q", URLChat, URLCompletion)
	}
	method, ok, err := o.str("method")
	switch {
	case err != nil:
		return err
	case !ok:
		return fail(`the request has no method; want "POST"`)
	case method != "POST":
		return fail(`method must be "POST" (got %q)`, clipString(method))
	}
	if url != URLChat && url != URLCompletion {
		return fail("url %q is not supported; want %q or %q", clipString(url), URLChat, URLCompletion)
	}
	body, err := o.object("body")
	if err != nil {
		return err
	}
	if body == nil {
		return fail("the request has no body")
	}
	if url == URLChat {
		err = chatBody(row, body)
	} else {
		err = completionBody(row, body)
	}
	if err != nil {
		return err
	}
	if err := commonBody(&row.Overrides, body, url == URLChat); err != nil {
		return err
	}
	row.Ignored = sorted(body.Ignored(o.Ignored(row.Ignored)))
	return nil
}

// clipString shortens a string quoted in an error message.
func clipString(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return s
}

// chatBody reads a /v1/chat/completions body's messages.
func chatBody(row *Row, body *object) error {
	v, ok := body.Raw("messages")
	if !ok {
		return fail(`body.messages is required: a list of {"role", "content"} objects`)
	}
	if jsonvalue.Kind(v) != "an array" {
		return body.typeError("messages", "an array", v)
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(v, &elems); err != nil {
		return body.typeError("messages", "an array", v)
	}
	if len(elems) == 0 {
		return fail("body.messages is empty; give at least one message")
	}
	msgs := make([]Message, 0, len(elems))
	size := 0
	var ignored []string
	for i, e := range elems {
		m, err := objectAt(fmt.Sprintf("body.messages[%d]", i), e)
		if err != nil {
			return err
		}
		role, ok, err := m.str("role")
		switch {
		case err != nil:
			return err
		case !ok || role == "":
			return fail("%s is required: a non-empty string", m.Key("role"))
		case role == "developer": // OpenAI's newer name of the system role
			role = "system"
		}
		content, err := messageContent(m)
		if err != nil {
			return err
		}
		m.Skip("name")
		ignored = m.Ignored(ignored)
		size += len(content)
		if size > MaxPromptBytes {
			return fail("the messages' contents are over %d bytes (1 MiB) long; at most that is allowed", MaxPromptBytes)
		}
		msgs = append(msgs, Message{Role: role, Content: content})
	}
	row.Messages = msgs
	row.Ignored = ignored // openAIRow adds the body's and the line's
	return nil
}

// messageContent reads a message's content: a string, a list of text
// parts (joined with "\n", as serve and vLLM do), or null ("").
func messageContent(m *object) (string, error) {
	v, ok := m.Raw("content")
	if !ok {
		return "", nil
	}
	switch jsonvalue.Kind(v) {
	case "a string":
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", m.typeError("content", "a string or a list of text parts", v)
		}
		return s, nil
	case "an array":
		var parts []json.RawMessage
		if err := json.Unmarshal(v, &parts); err != nil {
			return "", m.typeError("content", "a string or a list of text parts", v)
		}
		var b []byte
		for i, raw := range parts {
			part, err := objectAt(fmt.Sprintf("%s[%d]", m.Key("content"), i), raw)
			if err != nil {
				return "", err
			}
			t, _, err := part.str("type")
			if err != nil {
				return "", err
			}
			if t != "text" {
				return "", fail("%s is %q; only text parts are supported", part.Key("type"), clipString(t))
			}
			text, ok, err := part.str("text")
			if err != nil {
				return "", err
			}
			if !ok {
				return "", fail("%s is required: a string", part.Key("text"))
			}
			if i > 0 {
				b = append(b, '\n')
			}
			b = append(b, text...)
		}
		return string(b), nil
	}
	return "", m.typeError("content", "a string or a list of text parts", v)
}

// completionBody reads a /v1/completions body's prompt and echo.
func completionBody(row *Row, body *object) error {
	v, ok := body.Raw("prompt")
	if !ok {
		return fail("body.prompt is required: a string")
	}
	if jsonvalue.Kind(v) != "a string" || json.Unmarshal(v, &row.Prompt) != nil {
		return fail("body.prompt must be a string (got %s); lists of prompts and token ids are not supported in a batch", jsonvalue.Kind(v))
	}
	if len(row.Prompt) > MaxPromptBytes {
		return promptTooLong0(len(row.Prompt))
	}
	echo, err := body.boolean("echo")
	if err != nil {
		return err
	}
	row.Overrides.ReturnFullText = echo
	// suffix: only "" (OpenAI's default) is supported.
	if v, ok := body.Raw("suffix"); ok && string(bytes.TrimSpace(v)) != `""` {
		return fail("body.suffix is not supported (got %s)", jsonvalue.Clip(v))
	}
	if v, ok := body.Raw("best_of"); ok {
		if n, ok := jsonvalue.WholeNumber(v); !ok || n != 1 {
			return fail("body.best_of is not supported (got %s)", jsonvalue.Clip(v))
		}
	}
	if v, ok := body.Raw("logprobs"); ok {
		return fail("body.logprobs is not supported (got %s)", jsonvalue.Clip(v))
	}
	return nil
}

// commonBody reads the parameters that completions and chat completions
// share into ov, and refuses those that would change the answer but are
// not implemented (as serve does).
func commonBody(ov *Overrides, body *object, chat bool) error {
	// max_completion_tokens replaced max_tokens in OpenAI's API; both
	// are read, and the new one wins.
	maxTokens, err := body.integer("max_tokens")
	if err != nil {
		return err
	}
	maxCompletion, err := body.integer("max_completion_tokens")
	if err != nil {
		return err
	}
	ov.MaxNewTokens = maxTokens
	if maxCompletion != nil {
		ov.MaxNewTokens = maxCompletion
	}
	if ov.Temperature, err = body.number("temperature"); err != nil {
		return err
	}
	if ov.Temperature != nil {
		// OpenAI samples unless temperature is 0.
		ov.DoSample = ptr(*ov.Temperature > 0)
	}
	if ov.TopP, err = body.number("top_p"); err != nil {
		return err
	}
	if ov.TopK, err = body.integer("top_k"); err != nil {
		return err
	}
	if ov.TopK != nil && *ov.TopK == -1 {
		*ov.TopK = 0 // vLLM's "off"
	}
	if ov.RepetitionPenalty, err = body.number("repetition_penalty"); err != nil {
		return err
	}
	if ov.IgnoreEOS, err = body.boolean("ignore_eos"); err != nil {
		return err
	}
	if ov.Stop, err = body.strs("stop"); err != nil {
		return err
	}
	if ov.Seed, err = body.seed("seed"); err != nil {
		return err
	}
	n, err := body.integer("n")
	if err != nil {
		return err
	}
	if n != nil && *n != 1 {
		return fail("body.n must be 1 in a batch (got %d): a row has one answer", *n)
	}

	refuse := func(k string, ok func(raw []byte) bool) error {
		if v, given := body.Raw(k); given && (ok == nil || !ok(v)) {
			return fail("body.%s is not supported (got %s)", k, jsonvalue.Clip(v))
		}
		return nil
	}
	is := func(want string) func([]byte) bool {
		return func(raw []byte) bool { return string(bytes.Join(bytes.Fields(raw), nil)) == want }
	}
	zero := func(raw []byte) bool {
		f, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
		return jsonvalue.Kind(raw) == "a number" && err == nil && f == 0
	}
	if chat {
		if err := refuse("logprobs", is("false")); err != nil {
			return err
		}
		if err := refuse("top_logprobs", zero); err != nil {
			return err
		}
		choice, _ := body.Raw("tool_choice")
		none := string(bytes.TrimSpace(choice)) == `"none"`
		if err := refuse("tools", func(raw []byte) bool { return none || is("[]")(raw) }); err != nil {
			return err
		}
		if err := refuse("tool_choice", func(raw []byte) bool { return is(`"none"`)(raw) || is(`"auto"`)(raw) }); err != nil {
			return err
		}
		if err := refuse("parallel_tool_calls", is("false")); err != nil {
			return err
		}
	}
	for _, k := range []string{"presence_penalty", "frequency_penalty", "min_tokens"} {
		if err := refuse(k, zero); err != nil {
			return err
		}
	}
	if err := refuse("logit_bias", is("{}")); err != nil {
		return err
	}
	if err := refuse("response_format", func(raw []byte) bool {
		var f struct {
			Type string `json:"type"`
		}
		return json.Unmarshal(raw, &f) == nil && f.Type == "text"
	}); err != nil {
		return err
	}
	body.Skip("model", "stream", "stream_options", "user", "metadata", "store")
	return nil
}
