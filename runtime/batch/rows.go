package batch

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"

	"github.com/leo-operator/leo/runtime/batchio"
	"github.com/leo-operator/leo/runtime/sample"
)

// RowSeed is the sampling seed of a row that sets none: derived from the
// run's seed, the file and the row number, so that a row gets the same
// tokens whichever mini-batches ran before it, and whether the run was
// resumed or not. Without a run seed it is nil (the engine draws one: not
// reproducible, so sampling without --seed gives no byte-identical
// resume).
func RowSeed(run *uint64, file string, row int) *uint64 {
	if run == nil {
		return nil
	}
	h := sha256.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], *run)
	h.Write(b[:])
	h.Write([]byte(file))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(row)))
	seed := binary.LittleEndian.Uint64(h.Sum(nil))
	return &seed
}

// rowParams are a row's generation parameters: the run's, with the row's
// overrides, and its seed. fullText is return_full_text's value.
func rowParams(base sample.Params, fullText bool, o batchio.Overrides, file string, row int) (p sample.Params, full bool, err error) {
	p = base
	p.Seed = RowSeed(base.Seed, file, row)
	if o.MaxNewTokens != nil {
		p.MaxNewTokens = *o.MaxNewTokens
	}
	if o.Temperature != nil {
		p.Temperature = *o.Temperature
	}
	if o.TopP != nil {
		p.TopP = *o.TopP
	}
	if o.TopK != nil {
		p.TopK = *o.TopK
	}
	if o.DoSample != nil {
		p.DoSample = *o.DoSample
	}
	if o.RepetitionPenalty != nil {
		p.RepetitionPenalty = *o.RepetitionPenalty
	}
	if o.Stop != nil {
		p.Stop = o.Stop
	}
	if o.Seed != nil {
		seed := *o.Seed
		p.Seed = &seed
	}
	if o.IgnoreEOS != nil {
		p.IgnoreEOS = *o.IgnoreEOS
	}
	if p.MinNewTokens > p.MaxNewTokens { // a row's smaller max_new_tokens wins
		p.MinNewTokens = p.MaxNewTokens
	}
	full = fullText
	if o.ReturnFullText != nil {
		full = *o.ReturnFullText
	}
	return p, full, p.Validate()
}

// rowID is the hash that names a row's OpenAI output (the batch request,
// the request and the completion ids): of the file, the row and the run's
// seed, so that a resumed run writes the same ids.
func rowID(file string, row int, seed *uint64) string {
	h := sha256.New()
	h.Write([]byte(file))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(row)))
	if seed != nil {
		h.Write([]byte{0})
		h.Write([]byte(strconv.FormatUint(*seed, 10)))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}
