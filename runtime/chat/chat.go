package chat

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/leo-operator/leo/runtime/tokenizer"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"` // "system", "user" or "assistant"
	Content string `json:"content"`
}

// format is a family of chat formats. The zero value is Llama 2, so that
// a zero Template formats as the default does.
type format int

const (
	formatLlama2 format = iota
	formatMistral
	formatChatML
	formatLlama3
	formatZephyr
)

// formatNames are the formats' names, as Template.Name and Named spell
// them, in the format constants' order.
var formatNames = []string{"llama2", "mistral", "chatml", "llama3", "zephyr"}

// Template formats conversations for one model family. Make one with
// Llama2, Named or FromGGUF; the zero Template formats as Llama2.
type Template struct {
	format format
}

// Name is the template's format: "llama2", "mistral", "chatml", "llama3"
// or "zephyr".
func (t Template) Name() string { return formatNames[t.format] }

// Llama2 is Meta's Llama 2 chat format (the default).
func Llama2() Template { return Template{format: formatLlama2} }

func mistral() Template { return Template{format: formatMistral} }
func chatML() Template  { return Template{format: formatChatML} }
func llama3() Template  { return Template{format: formatLlama3} }
func zephyr() Template  { return Template{format: formatZephyr} }

// Named returns the format of that name, in any case ("ChatML" is
// "chatml"): what a command-line flag gives.
func Named(name string) (Template, error) {
	for f, n := range formatNames {
		if strings.EqualFold(strings.TrimSpace(name), n) {
			return Template{format: format(f)}, nil
		}
	}
	return Llama2(), fmt.Errorf("chat: unknown chat format %q; the formats are %s", name, strings.Join(formatNames, ", "))
}

// FromGGUF picks the template from a GGUF file's tokenizer.chat_template, a
// Jinja string; "" means the file has none, and gives Llama2. Like
// llama.cpp's llm_chat_detect_template it accepts a format's name (as
// Named does) and otherwise looks for the families' markers in the Jinja
// text. An unrecognised template gives an error naming the markers
// looked for, together with Llama2, the fallback the caller is expected
// to log and use.
func FromGGUF(jinja string) (Template, error) {
	if strings.TrimSpace(jinja) == "" {
		return Llama2(), nil
	}
	if t, err := Named(jinja); err == nil {
		return t, nil
	}
	has := func(s string) bool { return strings.Contains(jinja, s) }
	switch {
	// The order is llama.cpp's: ChatML before "[INST]", since a ChatML
	// template may mention "[INST]" in a comment or a branch.
	case has("<|im_start|>"):
		return chatML(), nil
	case has("[INST]") && has("<<SYS>>"):
		return Llama2(), nil
	case has("[INST]"): // Mistral's and Mixtral's templates have no <<SYS>>
		return mistral(), nil
	case has("<|start_header_id|>"):
		return llama3(), nil
	// zephyr-7b-beta's template writes the end of a turn as eos_token,
	// not "</s>". Phi-3 also uses <|user|> but ends turns with <|end|>,
	// which the Zephyr format would get wrong.
	case has("<|user|>") && (has("</s>") || has("eos_token")) && !has("<|end|>"):
		return zephyr(), nil
	}
	return Llama2(), errors.New(`chat: unrecognised tokenizer.chat_template: it has none of the markers "[INST]" with "<<SYS>>" (llama2), "[INST]" without it (mistral), "<|im_start|>" (chatml), "<|start_header_id|>" (llama3), "<|user|>" with "</s>" or eos_token and without "<|end|>" (zephyr)`)
}

// MessageError is a conversation that the template cannot format: a
// problem with the client's messages (an HTTP 400). It names the message
// by its index only, so that the caller can write the path in its own
// API's words (OpenAI's messages[i], Azure ML's input_string[i]).
type MessageError struct {
	Index int    // the message at fault; -1 for the list as a whole
	Field string // the message's field at fault ("role"); "" for none
	Msg   string // what is wrong, to follow the path: `is "robot"; it must be ...`
}

// Path is the place of the error in a list of messages called list:
// "list[2].role", or list itself.
func (e *MessageError) Path(list string) string {
	if e.Index < 0 {
		return list
	}
	p := fmt.Sprintf("%s[%d]", list, e.Index)
	if e.Field != "" {
		p += "." + e.Field
	}
	return p
}

// Error names the message as OpenAI's API does: "messages[1].role is ...".
func (e *MessageError) Error() string { return e.Path("messages") + " " + e.Msg }

func roleError(i int, format string, args ...any) *MessageError {
	return &MessageError{Index: i, Field: "role", Msg: fmt.Sprintf(format, args...)}
}

// Encode validates msgs and returns the prompt tokens, ending where the
// assistant's reply begins. Every error it returns is a *MessageError, a
// problem with msgs worded for the client that sent them. Content may be
// empty.
func (t Template) Encode(tok *tokenizer.Tokenizer, msgs []Message) ([]int32, error) {
	if err := t.validate(msgs); err != nil {
		return nil, err
	}
	switch t.format {
	case formatChatML:
		return encodeParts(tok, addsBOS(tok), chatMLParts(msgs)), nil
	case formatLlama3:
		// The template starts with bos_token whatever the vocabulary's
		// add_bos_token says.
		return encodeParts(tok, tok.BOS() >= 0, llama3Parts(msgs)), nil
	case formatZephyr:
		return encodeParts(tok, addsBOS(tok), zephyrParts(msgs)), nil
	case formatMistral:
		return encodeMistral(tok, msgs), nil
	}
	return encodeLlama2(tok, msgs), nil
}

var roles = map[string]bool{"system": true, "user": true, "assistant": true}

func (t Template) validate(msgs []Message) error {
	if len(msgs) == 0 {
		return &MessageError{Index: -1, Msg: `is empty; it needs at least one message with role "user"`}
	}
	for i, m := range msgs {
		if !roles[m.Role] {
			return roleError(i, `is %s; it must be "system", "user" or "assistant"`, quote(m.Role))
		}
	}
	if t.format == formatLlama2 || t.format == formatMistral {
		// Meta's chat_completion asserts this order after merging a first
		// system message into the next; Mistral's templates and
		// mistral-common want it too.
		name := "Llama 2"
		if t.format == formatMistral {
			name = "Mistral"
		}
		first := 0
		if msgs[0].Role == "system" {
			first = 1
		}
		for i := first; i < len(msgs); i++ {
			want := "user"
			if (i-first)%2 == 1 {
				want = "assistant"
			}
			switch role := msgs[i].Role; role {
			case want:
			case "system":
				return roleError(i, `is "system"; the %s format allows a system message only as the first message`, name)
			default:
				return roleError(i, `is %q; expected %q: the %s format needs user and assistant messages to alternate, starting with "user" (after an optional system message)`, role, want, name)
			}
		}
	}
	if last := len(msgs) - 1; msgs[last].Role != "user" {
		return roleError(last, `is %q; the last message must have role "user", since the model writes the assistant's reply to it`, msgs[last].Role)
	}
	return nil
}

// quote quotes a role for an error message, cut short so that a client
// cannot make the server echo megabytes back.
func quote(s string) string {
	const maxRoleRunes = 32
	if utf8.RuneCountInString(s) <= maxRoleRunes {
		return fmt.Sprintf("%q", s)
	}
	n := 0
	for i := range s {
		if n == maxRoleRunes {
			return fmt.Sprintf("%q...", s[:i])
		}
		n++
	}
	return fmt.Sprintf("%q", s)
}

// Meta's markers, from llama/generation.py.
const (
	bInst = "[INST]"
	eInst = "[/INST]"
	bSys  = "<<SYS>>\n"
	eSys  = "\n<</SYS>>\n\n"
)

// encodeLlama2 is Meta's chat_completion prompt for msgs, which validate
// has checked. Each Encode call gets the space prefix, as each of Meta's
// tokenizer.encode calls does.
func encodeLlama2(tok *tokenizer.Tokenizer, msgs []Message) []int32 {
	if msgs[0].Role == "system" {
		// Merged before strip, as Meta does: a user message of only
		// whitespace lets strip eat E_SYS's newlines too.
		merged := Message{Role: "user", Content: bSys + msgs[0].Content + eSys + msgs[1].Content}
		msgs = append([]Message{merged}, msgs[2:]...)
	}
	var out []int32
	for i := 0; i+1 < len(msgs); i += 2 {
		out = appendID(out, tok.BOS())
		out = append(out, tok.Encode(bInst+" "+pyStrip(msgs[i].Content)+" "+eInst+" "+pyStrip(msgs[i+1].Content)+" ", false)...)
		out = appendID(out, tok.EOS())
	}
	out = appendID(out, tok.BOS())
	return append(out, tok.Encode(bInst+" "+pyStrip(msgs[len(msgs)-1].Content)+" "+eInst, false)...)
}

// encodeMistral is mistral-common's tokenizer V1 prompt for msgs, which
// validate has checked: [BOS], each user message as encode("[INST] " +
// content + " [/INST]"), each answer as encode(content) [EOS], a first
// system message prepended to the first user message followed by "\n\n".
// Each Encode call gets the space prefix, as each of mistral-common's
// encode calls does; content is plain text, never control tokens.
func encodeMistral(tok *tokenizer.Tokenizer, msgs []Message) []int32 {
	if msgs[0].Role == "system" {
		merged := Message{Role: "user", Content: msgs[0].Content + "\n\n" + msgs[1].Content}
		msgs = append([]Message{merged}, msgs[2:]...)
	}
	out := appendID(nil, tok.BOS())
	for _, m := range msgs {
		if m.Role == "user" {
			out = append(out, tok.Encode(bInst+" "+m.Content+" "+eInst, false)...)
			continue
		}
		out = append(out, tok.Encode(m.Content, false)...)
		out = appendID(out, tok.EOS())
	}
	return out
}

// appendID appends a special token id unless the vocabulary lacks it (-1).
func appendID(out []int32, id int32) []int32 {
	if id < 0 {
		return out
	}
	return append(out, id)
}

// pyStrip is Python's str.strip(), which Meta's reference and Jinja's
// trim filter use: it removes the characters for which str.isspace() is
// true, which are Go's unicode.IsSpace ones plus U+001C to U+001F.
// (strings.TrimSpace would keep those four.)
func pyStrip(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || 0x1C <= r && r <= 0x1F
	})
}

// part is a piece of a rendered prompt: a marker the template writes,
// tokenized as a control token where the vocabulary has it as one, or
// text, which is never parsed for special tokens.
type part struct {
	s      string
	marker bool
}

func text(s string) part   { return part{s: s} }
func marker(s string) part { return part{s: s, marker: true} }

func chatMLParts(msgs []Message) []part {
	var p []part
	for _, m := range msgs {
		p = append(p, marker("<|im_start|>"), text(m.Role+"\n"), text(m.Content), marker("<|im_end|>"), text("\n"))
	}
	return append(p, marker("<|im_start|>"), text("assistant\n"))
}

func llama3Parts(msgs []Message) []part {
	var p []part
	for _, m := range msgs {
		p = append(p, marker("<|start_header_id|>"), text(m.Role), marker("<|end_header_id|>"),
			text("\n\n"), text(pyStrip(m.Content)), marker("<|eot_id|>"))
	}
	return append(p, marker("<|start_header_id|>"), text("assistant"), marker("<|end_header_id|>"), text("\n\n"))
}

func zephyrParts(msgs []Message) []part {
	var p []part
	for _, m := range msgs {
		p = append(p, marker("<|"+m.Role+"|>"), text("\n"), text(m.Content), marker("</s>"), text("\n"))
	}
	return append(p, marker("<|assistant|>"), text("\n"))
}

// encodeParts tokenizes a rendered prompt as llama.cpp tokenizes the
// string with special tokens parsed, but finding special tokens only in
// markers. Text is gathered up to the next marker that is a special token
// and encoded as one run, so that merges across a marker that is plain
// text, or across template text and content, are the same as in the whole
// string; each run gets the space prefix because it starts the prompt or
// follows a special token, as in llama.cpp.
func encodeParts(tok *tokenizer.Tokenizer, bos bool, parts []part) []int32 {
	var out []int32
	if bos {
		out = appendID(out, tok.BOS())
	}
	var run strings.Builder
	flush := func() {
		if run.Len() > 0 {
			out = append(out, tok.Encode(run.String(), false)...)
			run.Reset()
		}
	}
	for _, p := range parts {
		if p.marker {
			if id, ok := specialID(tok, p.s); ok {
				flush()
				out = append(out, id)
				continue
			}
		}
		run.WriteString(p.s)
	}
	flush()
	return out
}

// specialID returns the id of the special token written s, if the
// vocabulary has one.
func specialID(tok *tokenizer.Tokenizer, s string) (int32, bool) {
	ids := tok.EncodeSpecial(s, false)
	if len(ids) != 1 || tok.Piece(ids[0]) != s {
		return -1, false
	}
	switch tok.Type(ids[0]) {
	case tokenizer.Control, tokenizer.UserDefined, tokenizer.Unknown:
		return ids[0], true
	}
	return -1, false
}

// addsBOS reports whether the vocabulary frames text with BOS
// (add_bos_token), which llama.cpp's server does for a chat prompt. The
// tokenizer does not say so directly; encoding "" shows its framing. (A
// vocabulary whose BOS and EOS are one token and that adds only EOS would
// read as adding BOS; none is known.)
func addsBOS(tok *tokenizer.Tokenizer) bool {
	f := tok.Encode("", true)
	return len(f) > 0 && tok.BOS() >= 0 && f[0] == tok.BOS()
}
