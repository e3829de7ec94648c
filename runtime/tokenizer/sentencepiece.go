package tokenizer

import (
	"errors"
	"fmt"
	"math"
)

// This file reads SentencePiece's tokenizer.model, a serialized
// sentencepiece.ModelProto (sentencepiece_model.proto), by decoding the
// protobuf wire format by hand: the file is untrusted input, and the few
// fields needed do not justify a protobuf dependency. Unknown fields are
// skipped, as protobuf readers do, so newer files still load.

// Field numbers in sentencepiece_model.proto.
const (
	fieldModelPieces         = 1 // ModelProto.pieces (repeated SentencePiece)
	fieldModelTrainerSpec    = 2 // ModelProto.trainer_spec
	fieldModelNormalizerSpec = 3 // ModelProto.normalizer_spec

	fieldPieceText  = 1 // SentencePiece.piece
	fieldPieceScore = 2 // SentencePiece.score
	fieldPieceType  = 3 // SentencePiece.type

	fieldTrainerModelType = 3  // TrainerSpec.model_type
	fieldTrainerUnkID     = 40 // TrainerSpec.unk_id
	fieldTrainerBosID     = 41 // TrainerSpec.bos_id
	fieldTrainerEosID     = 42 // TrainerSpec.eos_id
	fieldTrainerPadID     = 43 // TrainerSpec.pad_id

	fieldNormName               = 1 // NormalizerSpec.name
	fieldNormPrecompiledCharmap = 2 // NormalizerSpec.precompiled_charsmap
	fieldNormAddDummyPrefix     = 3 // NormalizerSpec.add_dummy_prefix
	fieldNormRemoveExtraSpaces  = 4 // NormalizerSpec.remove_extra_whitespaces
	fieldNormEscapeSpaces       = 5 // NormalizerSpec.escape_whitespaces
)

// Protobuf wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// TrainerSpec.ModelType values.
const (
	modelUnigram = 1
	modelBPE     = 2
	modelWord    = 3
	modelChar    = 4
)

// ParseSentencePiece reads a SentencePiece model file (tokenizer.model, as
// Meta ships with Llama 2) into a Vocab: the pieces with their scores and
// types, the special ids from the trainer spec (unk_id, bos_id, eos_id,
// pad_id, with SentencePiece's defaults 0, 1, 2, -1 where absent) and
// add_dummy_prefix from the normalizer spec. AddBOS is set when the model
// has a BOS id and AddEOS is not, as llama.cpp and Hugging Face do for
// Llama.
//
// Only BPE models with the identity normalizer are accepted, since that is
// the algorithm this package implements; a unigram model or one that
// normalizes text (NFKC, removing extra spaces) would silently tokenize
// differently, so it is refused with an error naming the field.
func ParseSentencePiece(data []byte) (Vocab, error) {
	if len(data) >= 4 && string(data[:4]) == "GGUF" {
		return Vocab{}, errors.New("tokenizer.model: this is a GGUF file, not a SentencePiece model; fill a Vocab from its tokenizer.ggml.* keys instead")
	}
	v, err := parseModel(data)
	if err != nil {
		return Vocab{}, fmt.Errorf("tokenizer.model: %w", err)
	}
	return v, nil
}

func parseModel(data []byte) (Vocab, error) {
	v := Vocab{UNK: 0, BOS: 1, EOS: 2, PAD: -1, AddSpacePrefix: true}
	modelType := uint64(modelUnigram) // the proto default, when trainer_spec or the field is absent
	r := pbReader{data: data}
	for !r.done() {
		field, wire, start, err := r.tag()
		if err != nil {
			return Vocab{}, err
		}
		switch field {
		case fieldModelPieces:
			body, err := r.message(field, wire, "pieces")
			if err != nil {
				return Vocab{}, err
			}
			if len(v.Tokens) >= MaxVocabSize {
				return Vocab{}, fmt.Errorf("more than %d pieces; this is not a tokenizer model", MaxVocabSize)
			}
			text, score, typ, err := parsePiece(r.sub(body))
			if err != nil {
				return Vocab{}, fmt.Errorf("piece %d (field at byte offset %d): %w", len(v.Tokens), start, err)
			}
			v.Tokens = append(v.Tokens, text)
			v.Scores = append(v.Scores, score)
			v.Types = append(v.Types, typ)
		case fieldModelTrainerSpec:
			body, err := r.message(field, wire, "trainer_spec")
			if err != nil {
				return Vocab{}, err
			}
			if modelType, err = parseTrainerSpec(r.sub(body), &v); err != nil {
				return Vocab{}, fmt.Errorf("trainer_spec at byte offset %d: %w", start, err)
			}
		case fieldModelNormalizerSpec:
			body, err := r.message(field, wire, "normalizer_spec")
			if err != nil {
				return Vocab{}, err
			}
			if err := parseNormalizerSpec(r.sub(body), &v); err != nil {
				return Vocab{}, fmt.Errorf("normalizer_spec at byte offset %d: %w", start, err)
			}
		default:
			if err := r.skip(wire); err != nil {
				return Vocab{}, err
			}
		}
	}
	if len(v.Tokens) == 0 {
		return Vocab{}, errors.New("no pieces; the file is empty or not a SentencePiece model")
	}
	if modelType != modelBPE {
		return Vocab{}, fmt.Errorf("trainer_spec.model_type is %s; only BPE models (the Llama 2 tokenizer) are supported", modelTypeName(modelType))
	}
	n := int32(len(v.Tokens))
	for _, s := range []struct {
		name string
		id   *int32
	}{{"unk_id", &v.UNK}, {"bos_id", &v.BOS}, {"eos_id", &v.EOS}, {"pad_id", &v.PAD}} {
		if *s.id < -1 || *s.id >= n {
			return Vocab{}, fmt.Errorf("trainer_spec.%s %d is outside the %d pieces", s.name, *s.id, n)
		}
	}
	v.AddBOS = v.BOS >= 0
	if err := v.validate(); err != nil {
		return Vocab{}, err
	}
	return v, nil
}

func modelTypeName(t uint64) string {
	switch t {
	case modelUnigram:
		return "UNIGRAM"
	case modelBPE:
		return "BPE"
	case modelWord:
		return "WORD"
	case modelChar:
		return "CHAR"
	}
	return fmt.Sprintf("%d (unknown)", t)
}

// parsePiece reads one ModelProto.SentencePiece message.
func parsePiece(r pbReader) (text string, score float32, typ TokenType, err error) {
	typ = Normal // the proto default
	for !r.done() {
		field, wire, _, err := r.tag()
		if err != nil {
			return "", 0, 0, err
		}
		switch field {
		case fieldPieceText:
			b, err := r.message(field, wire, "piece")
			if err != nil {
				return "", 0, 0, err
			}
			text = string(b)
		case fieldPieceScore:
			if wire != wireFixed32 {
				return "", 0, 0, r.wireErr(field, "score", wire, wireFixed32)
			}
			bits, err := r.fixed32()
			if err != nil {
				return "", 0, 0, err
			}
			score = math.Float32frombits(bits)
		case fieldPieceType:
			t, err := r.varintField(field, wire, "type")
			if err != nil {
				return "", 0, 0, err
			}
			if t < uint64(Normal) || t > uint64(Byte) {
				return "", 0, 0, fmt.Errorf("type %d is not a SentencePiece type (1 normal to 6 byte)", t)
			}
			typ = TokenType(t)
		default:
			if err := r.skip(wire); err != nil {
				return "", 0, 0, err
			}
		}
	}
	return text, score, typ, nil
}

// parseTrainerSpec reads the ids of the special pieces and the model type.
func parseTrainerSpec(r pbReader, v *Vocab) (modelType uint64, err error) {
	modelType = modelUnigram
	for !r.done() {
		field, wire, _, err := r.tag()
		if err != nil {
			return 0, err
		}
		var dst *int32
		var name string
		switch field {
		case fieldTrainerModelType:
			if modelType, err = r.varintField(field, wire, "model_type"); err != nil {
				return 0, err
			}
			continue
		case fieldTrainerUnkID:
			dst, name = &v.UNK, "unk_id"
		case fieldTrainerBosID:
			dst, name = &v.BOS, "bos_id"
		case fieldTrainerEosID:
			dst, name = &v.EOS, "eos_id"
		case fieldTrainerPadID:
			dst, name = &v.PAD, "pad_id"
		default:
			if err := r.skip(wire); err != nil {
				return 0, err
			}
			continue
		}
		x, err := r.varintField(field, wire, name)
		if err != nil {
			return 0, err
		}
		// int32 fields are varints of the value sign-extended to 64 bits.
		id := int64(x)
		if id < math.MinInt32 || id > math.MaxInt32 {
			return 0, fmt.Errorf("%s %d does not fit int32", name, id)
		}
		*dst = int32(id)
	}
	return modelType, nil
}

// parseNormalizerSpec reads add_dummy_prefix and refuses normalizations
// this package does not implement.
func parseNormalizerSpec(r pbReader, v *Vocab) error {
	removeExtra, escape := true, true // the proto defaults
	var name string
	var charsmap int
	for !r.done() {
		field, wire, _, err := r.tag()
		if err != nil {
			return err
		}
		switch field {
		case fieldNormName:
			b, err := r.message(field, wire, "name")
			if err != nil {
				return err
			}
			name = string(b)
		case fieldNormPrecompiledCharmap:
			b, err := r.message(field, wire, "precompiled_charsmap")
			if err != nil {
				return err
			}
			charsmap = len(b)
		case fieldNormAddDummyPrefix, fieldNormRemoveExtraSpaces, fieldNormEscapeSpaces:
			x, err := r.varintField(field, wire, "bool option")
			if err != nil {
				return err
			}
			switch field {
			case fieldNormAddDummyPrefix:
				v.AddSpacePrefix = x != 0
			case fieldNormRemoveExtraSpaces:
				removeExtra = x != 0
			case fieldNormEscapeSpaces:
				escape = x != 0
			}
		default:
			if err := r.skip(wire); err != nil {
				return err
			}
		}
	}
	if charsmap > 0 {
		return fmt.Errorf("normalizer %q carries normalization rules (precompiled_charsmap, %d bytes) that this tokenizer does not apply; only the identity normalizer (Llama 2) is supported", name, charsmap)
	}
	if removeExtra {
		return errors.New("remove_extra_whitespaces is true; this tokenizer keeps all spaces, as Llama 2's model does (remove_extra_whitespaces: false)")
	}
	if !escape {
		return errors.New("escape_whitespaces is false; this tokenizer always writes spaces as U+2581, as Llama 2's model does")
	}
	return nil
}

// pbReader decodes protobuf wire format from a byte slice. Every read is
// bounds-checked and reports the byte offset of what was wrong.
type pbReader struct {
	data []byte
	off  int
	base int // offset of data[0] in the file, for error messages
}

// sub returns a reader of a nested message that message or bytes just
// returned, keeping offsets in errors relative to the whole file.
func (r *pbReader) sub(body []byte) pbReader {
	return pbReader{data: body, base: r.base + r.off - len(body)}
}

func (r *pbReader) done() bool { return r.off >= len(r.data) }

// tag reads a field key and returns the field number, the wire type and the
// offset where the key started.
func (r *pbReader) tag() (field uint64, wire int, start int, err error) {
	start = r.off
	key, err := r.varint()
	if err != nil {
		return 0, 0, r.base + start, err
	}
	field, wire = key>>3, int(key&7)
	if field == 0 || field > 1<<29-1 {
		return 0, 0, r.base + start, fmt.Errorf("byte offset %d: field number %d is invalid; the data is not a protobuf message", r.base+start, field)
	}
	return field, wire, r.base + start, nil
}

func (r *pbReader) varint() (uint64, error) {
	var x uint64
	for i := 0; i < 10; i++ {
		if r.off >= len(r.data) {
			return 0, fmt.Errorf("byte offset %d: varint runs past the end of the data (truncated file?)", r.base+r.off)
		}
		b := r.data[r.off]
		r.off++
		if i == 9 && b > 1 {
			return 0, fmt.Errorf("byte offset %d: varint overflows 64 bits", r.base+r.off-1)
		}
		x |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return x, nil
		}
	}
	return 0, fmt.Errorf("byte offset %d: varint longer than 10 bytes", r.base+r.off)
}

func (r *pbReader) fixed32() (uint32, error) {
	if len(r.data)-r.off < 4 {
		return 0, fmt.Errorf("byte offset %d: 4-byte value runs past the end of the data (truncated file?)", r.base+r.off)
	}
	b := r.data[r.off : r.off+4]
	r.off += 4
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24, nil
}

// bytes reads a length-delimited value; the result aliases r.data.
func (r *pbReader) bytes() ([]byte, error) {
	start := r.off
	n, err := r.varint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.data)-r.off) {
		return nil, fmt.Errorf("byte offset %d: length %d runs past the end of the data, %d bytes left (truncated file?)", r.base+start, n, len(r.data)-r.off)
	}
	b := r.data[r.off : r.off+int(n)]
	r.off += int(n)
	return b, nil
}

// message reads a length-delimited field after checking its wire type.
func (r *pbReader) message(field uint64, wire int, name string) ([]byte, error) {
	if wire != wireBytes {
		return nil, r.wireErr(field, name, wire, wireBytes)
	}
	return r.bytes()
}

// varintField reads a varint field after checking its wire type.
func (r *pbReader) varintField(field uint64, wire int, name string) (uint64, error) {
	if wire != wireVarint {
		return 0, r.wireErr(field, name, wire, wireVarint)
	}
	return r.varint()
}

func (r *pbReader) wireErr(field uint64, name string, got, want int) error {
	return fmt.Errorf("byte offset %d: field %d (%s) has wire type %d, want %d; the data is not a SentencePiece model", r.base+r.off, field, name, got, want)
}

// skip passes over a field this reader does not use.
func (r *pbReader) skip(wire int) error {
	switch wire {
	case wireVarint:
		_, err := r.varint()
		return err
	case wireFixed64:
		if len(r.data)-r.off < 8 {
			return fmt.Errorf("byte offset %d: 8-byte value runs past the end of the data (truncated file?)", r.base+r.off)
		}
		r.off += 8
		return nil
	case wireBytes:
		_, err := r.bytes()
		return err
	case wireFixed32:
		_, err := r.fixed32()
		return err
	}
	// Groups (3, 4) are deprecated and never used by sentencepiece_model.proto.
	return fmt.Errorf("byte offset %d: unsupported wire type %d; the data is not a SentencePiece model", r.base+r.off, wire)
}
