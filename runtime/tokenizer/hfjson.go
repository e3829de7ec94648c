package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// hfTokenizer is the part of a Hugging Face tokenizer.json this package
// reads.
type hfTokenizer struct {
	AddedTokens []struct {
		ID      int32  `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Model         struct {
		Type         string           `json:"type"`
		Vocab        map[string]int32 `json:"vocab"`
		Merges       json.RawMessage  `json:"merges"`
		UnkToken     string           `json:"unk_token"`
		ByteFallback bool             `json:"byte_fallback"`
	} `json:"model"`
}

// ParseHFTokenizerJSON reads a Hugging Face tokenizer.json made from a
// SentencePiece BPE model (LlamaTokenizerFast for Llama 1 and 2, and the
// models that share that tokenizer): BPE with byte fallback, text
// normalized by prepending "▁" and turning spaces into "▁".
//
// Its merges are ordered by priority where SentencePiece has scores:
// each token made by a merge gets the score −(rank of the first merge that
// makes it), so that this package's merge-by-score picks the merges the
// fast tokenizer picks. Byte-level BPE tokenizers (GPT-2 style, as Llama
// 3's) are a different algorithm and are refused.
func ParseHFTokenizerJSON(data []byte) (Vocab, error) {
	var h hfTokenizer
	if err := json.Unmarshal(data, &h); err != nil {
		return Vocab{}, fmt.Errorf("tokenizer.json: %w", err)
	}
	m := h.Model
	switch {
	case m.Type != "BPE":
		return Vocab{}, fmt.Errorf("tokenizer.json: model.type %q; only BPE is supported", m.Type)
	case !m.ByteFallback || strings.Contains(string(h.PreTokenizer), "ByteLevel"):
		return Vocab{}, errors.New("tokenizer.json: a byte-level BPE tokenizer (GPT-2 style, as Llama 3's); only SentencePiece-style BPE with byte fallback (Llama 1 and 2) is supported")
	case !strings.Contains(string(h.Normalizer), "▁"):
		return Vocab{}, errors.New("tokenizer.json: the normalizer does not turn spaces into \"▁\"; only SentencePiece-style tokenizers are supported")
	}
	n := len(m.Vocab)
	for _, a := range h.AddedTokens {
		n = max(n, int(a.ID)+1)
	}
	if n == 0 || n > MaxVocabSize {
		return Vocab{}, fmt.Errorf("tokenizer.json: %d tokens", n)
	}
	v := Vocab{
		Tokens: make([]string, n), Scores: make([]float32, n), Types: make([]TokenType, n),
		UNK: -1, BOS: -1, EOS: -1, PAD: -1,
		AddSpacePrefix: strings.Contains(string(h.Normalizer), `"Prepend"`),
	}
	seen := make([]bool, n)
	for tok, id := range m.Vocab {
		if id < 0 || int(id) >= n || seen[id] {
			return Vocab{}, fmt.Errorf("tokenizer.json: id %d of %q is out of range or used twice", id, tok)
		}
		seen[id] = true
		v.Tokens[id], v.Types[id] = tok, Normal
		if len(tok) == 6 && strings.HasPrefix(tok, "<0x") && strings.HasSuffix(tok, ">") {
			v.Types[id] = Byte
		}
	}
	for _, a := range h.AddedTokens {
		if a.ID < 0 || (seen[a.ID] && v.Tokens[a.ID] != a.Content) {
			return Vocab{}, fmt.Errorf("tokenizer.json: added token %q has id %d, which the vocabulary gives %q", a.Content, a.ID, v.Tokens[a.ID])
		}
		seen[a.ID] = true
		v.Tokens[a.ID] = a.Content
		v.Types[a.ID] = UserDefined
		if a.Special {
			v.Types[a.ID] = Control
		}
		switch a.Content {
		case "<s>":
			v.BOS = a.ID
		case "</s>":
			v.EOS = a.ID
		}
	}
	for id, ok := range seen {
		if !ok {
			v.Tokens[id], v.Types[id] = fmt.Sprintf("[UNUSED%d]", id), Unused
		}
	}
	if id, ok := m.Vocab[m.UnkToken]; ok && m.UnkToken != "" {
		v.UNK = id
		v.Types[id] = Unknown
	}
	merges, err := parseMerges(m.Merges)
	if err != nil {
		return Vocab{}, fmt.Errorf("tokenizer.json: %w", err)
	}
	// Tokens no merge makes keep the lowest score.
	for id := range v.Scores {
		v.Scores[id] = -float32(len(merges) + 1)
	}
	for rank, mg := range merges {
		id, ok := m.Vocab[mg[0]+mg[1]]
		if !ok {
			return Vocab{}, fmt.Errorf("tokenizer.json: merge %d (%q %q) makes %q, which is not in the vocabulary", rank, mg[0], mg[1], mg[0]+mg[1])
		}
		if s := -float32(rank); s > v.Scores[id] {
			v.Scores[id] = s
		}
	}
	v.AddBOS = v.BOS >= 0 && addsSpecial(h.PostProcessor, v.Tokens[v.BOS])
	if err := v.validate(); err != nil {
		return Vocab{}, fmt.Errorf("tokenizer.json: %w", err)
	}
	return v, nil
}

// parseMerges reads merges as "a b" strings or as ["a", "b"] pairs (the
// newer format).
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		out := make([][2]string, len(strs))
		for i, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("merge %d %q is not two tokens", i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var pairs [][2]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, errors.New("model.merges is neither a list of \"a b\" strings nor of pairs")
	}
	return pairs, nil
}

// addsSpecial reports whether a post-processor's template adds the special
// token tok (a "SpecialToken" entry with that id, at any depth).
func addsSpecial(raw json.RawMessage, tok string) bool {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	var walk func(any) bool
	walk = func(x any) bool {
		switch x := x.(type) {
		case map[string]any:
			if st, ok := x["SpecialToken"].(map[string]any); ok && st["id"] == tok {
				return true
			}
			for _, y := range x {
				if walk(y) {
					return true
				}
			}
		case []any:
			for _, y := range x {
				if walk(y) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

// HFTokenizerJSON writes a SentencePiece BPE vocabulary as the
// tokenizer.json that transformers' LlamaConverter makes of it: the pieces
// as the BPE vocabulary; merges as SentencePieceExtractor lists them
// (every split of a normal piece into two pieces, ordered by the piece's
// score, ties by the halves' ids); control and unknown pieces as special
// added tokens; the Prepend and Replace normalizers; byte fallback; BOS
// added by the post-processor when the vocabulary adds it.
func HFTokenizerJSON(v Vocab) ([]byte, error) {
	if err := v.validate(); err != nil {
		return nil, err
	}
	ids := make(map[string]int, len(v.Tokens))
	for i, p := range v.Tokens {
		ids[p] = i
	}
	type merge struct {
		l, r  string
		score float32
	}
	var merges []merge
	for i, p := range v.Tokens {
		if v.typeOf(i) != Normal {
			continue
		}
		var local []merge
		for k := 1; k < len(p); k++ {
			if _, ok := ids[p[:k]]; !ok {
				continue
			}
			if _, ok := ids[p[k:]]; ok {
				local = append(local, merge{p[:k], p[k:], v.scoreOf(i)})
			}
		}
		sort.Slice(local, func(a, b int) bool {
			if ids[local[a].l] != ids[local[b].l] {
				return ids[local[a].l] < ids[local[b].l]
			}
			return ids[local[a].r] < ids[local[b].r]
		})
		merges = append(merges, local...)
	}
	sort.SliceStable(merges, func(a, b int) bool { return merges[a].score > merges[b].score })
	ms := make([]string, len(merges))
	for i, m := range merges {
		ms[i] = m.l + " " + m.r
	}
	var added []map[string]any
	for i, p := range v.Tokens {
		if t := v.typeOf(i); t == Control || t == Unknown {
			added = append(added, map[string]any{"id": i, "content": p, "special": true})
		}
	}
	var post any
	if v.AddBOS && v.BOS >= 0 {
		post = map[string]any{"type": "TemplateProcessing", "single": []any{
			map[string]any{"SpecialToken": map[string]any{"id": v.Tokens[v.BOS], "type_id": 0}},
			map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}},
		}}
	}
	unk := ""
	if v.UNK >= 0 {
		unk = v.Tokens[v.UNK]
	}
	norm := []any{map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"}}
	if v.AddSpacePrefix {
		norm = append([]any{map[string]any{"type": "Prepend", "prepend": "▁"}}, norm...)
	}
	doc := map[string]any{
		"version":        "1.0",
		"added_tokens":   added,
		"normalizer":     map[string]any{"type": "Sequence", "normalizers": norm},
		"pre_tokenizer":  nil,
		"post_processor": post,
		"model":          map[string]any{"type": "BPE", "unk_token": unk, "fuse_unk": true, "byte_fallback": true, "vocab": ids, "merges": ms},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // "<s>" as the Hub's files write it
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
