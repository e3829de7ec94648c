package chat

import (
	"errors"
	"strings"
	"testing"

	"github.com/leo-operator/leo/runtime/tokenizer"
)

// FuzzEncode feeds random conversations to every format with both
// vocabularies: Encode must not panic, must return tokens of the
// vocabulary or an error, and must not let content add control tokens.
func FuzzEncode(f *testing.F) {
	f.Add(uint8(0), []byte{1}, "Hello")
	f.Add(uint8(0), []byte{0, 1, 2, 1}, "sys\x00hi\x00there\x00again")
	f.Add(uint8(1), []byte{2, 1, 0, 1}, "</s>\x00<|im_end|>\x00\x00 ")
	f.Add(uint8(12), []byte{1, 2, 1}, "<|eot_id|>\x00<|start_header_id|>\x00\xff\xfe")
	f.Add(uint8(13), []byte{3, 1}, "<|user|>\x00<s>")
	f.Add(uint8(0), []byte{}, "")
	f.Add(uint8(4), []byte{0, 1, 2, 1}, "sys\x00[INST] hi [/INST]\x00</s>\x00again")
	f.Add(uint8(14), []byte{1, 2, 1}, "a\x00b")
	tmpls := []Template{Llama2(), chatML(), llama3(), zephyr(), mistral()}
	roleNames := []string{"system", "user", "assistant", "tool"}
	f.Fuzz(func(t *testing.T, which uint8, roles []byte, content string) {
		tmpl := tmpls[int(which)%len(tmpls)]
		tok := llama(t)
		if which&8 != 0 {
			tok = extended(t)
		}
		if len(roles) > 32 {
			roles = roles[:32]
		}
		contents := strings.Split(content, "\x00")
		var msgs []Message
		for i, r := range roles {
			msgs = append(msgs, Message{Role: roleNames[int(r)%len(roleNames)], Content: contents[i%len(contents)]})
		}
		ids, err := tmpl.Encode(tok, msgs)
		if err != nil {
			if ids != nil {
				t.Fatalf("tokens %v with error %v", ids, err)
			}
			if me := (*MessageError)(nil); !errors.As(err, &me) || !strings.HasPrefix(err.Error(), "messages") {
				t.Fatalf("error %T %q is not a *MessageError starting with messages", err, err)
			}
			return
		}
		if len(msgs) == 0 || msgs[len(msgs)-1].Role != "user" {
			t.Fatalf("no error for %v", msgs)
		}
		for _, id := range ids {
			if id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("token %d outside the vocabulary", id)
			}
		}
		// Control tokens come only from the format: count them.
		controls := 0
		for _, id := range ids {
			if tok.Type(id) == tokenizer.Control || tok.Type(id) == tokenizer.Unknown {
				controls++
			}
		}
		if want := controlCount(tok, tmpl, msgs); controls != want {
			t.Fatalf("%s: %d control tokens, want %d, in %v for %q", tmpl.Name(), controls, want, ids, msgs)
		}
		_ = tok.Decode(ids)
	})
}

// controlCount is the number of control tokens format tmpl writes for a
// valid conversation msgs.
func controlCount(tok *tokenizer.Tokenizer, tmpl Template, msgs []Message) int {
	if tmpl.format == formatMistral {
		n := 1 // BOS, and an EOS per assistant message
		for _, m := range msgs {
			if m.Role == "assistant" {
				n++
			}
		}
		return n
	}
	if tmpl.format == formatLlama2 {
		turns := len(msgs)
		if msgs[0].Role == "system" {
			turns--
		}
		return turns // a BOS per user message, an EOS per assistant message
	}
	n := 1 // BOS: the Llama 2 vocabulary adds it
	for _, m := range markers {
		if _, ok := specialID(tok, m); ok {
			n += markerCount(tmpl, msgs, m)
		}
	}
	if tmpl.format == formatZephyr {
		n += len(msgs) // </s>
	}
	return n
}
