package batchio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Format of an input file.
type Format string

// Formats: auto decides per file (Detect).
const (
	FormatAuto   Format = "auto"
	FormatCSV    Format = "csv"
	FormatJSONL  Format = "jsonl"
	FormatOpenAI Format = "openai" // OpenAI batch JSONL
)

// Limits.
const (
	// DefaultColumn is the prompt's column (CSV) or key (JSONL) when the
	// column argument is "".
	DefaultColumn = "input_string"
	// FallbackColumn is the CSV column used when the column is
	// DefaultColumn and the header lacks it.
	FallbackColumn = "text"
	// MaxFileBytes is the largest file ReadFile reads.
	MaxFileBytes = 1 << 30
	// MaxLineBytes is the longest line of any format (its line ending
	// not counted); a longer one fails the file.
	MaxLineBytes = 16 << 20
	// MaxPromptBytes is the longest prompt (for a chat, the sum of its
	// messages' contents); a longer one fails its row.
	MaxPromptBytes = 1 << 20
)

// Overrides are a row's own generation parameters (nil/empty: the run's).
type Overrides struct {
	MaxNewTokens      *int
	Temperature       *float64
	TopP              *float64
	TopK              *int
	DoSample          *bool
	RepetitionPenalty *float64
	Stop              []string
	Seed              *uint64
	ReturnFullText    *bool
	IgnoreEOS         *bool
}

// Message is one chat message of an OpenAI chat request.
type Message struct{ Role, Content string }

// Row is one input row.
type Row struct {
	Number    int       // row_number_per_file: data rows (CSV) or non-blank lines (JSONL) counted from 0
	Prompt    string    // the text prompt (CSV, JSONL, OpenAI /v1/completions)
	Messages  []Message // an OpenAI /v1/chat/completions body's messages; nil otherwise
	URL       string    // OpenAI batch: the request's url ("/v1/chat/completions" or "/v1/completions")
	CustomID  string    // OpenAI batch: custom_id
	Overrides Overrides
	Err       error // a malformed row: why; the row fails, the others go on

	// Line is the 1-based line of the file where the row starts.
	Line int
	// Ignored lists the keys of a JSONL row's parameters or an OpenAI
	// row that nothing reads, as dotted paths ("parameters.foo",
	// "body.bar"), sorted; nil when none. For a warning, not an error.
	Ignored []string
}

// OpenAI batch request urls.
const (
	URLChat       = "/v1/chat/completions"
	URLCompletion = "/v1/completions"
)

var bom = []byte("\xef\xbb\xbf")

// Detect decides a file's format from its name and first bytes (for
// FormatAuto), as docs/batch.md says: ".csv" is CSV; ".jsonl", ".json"
// and ".ndjson" are JSONL, or OpenAI batch when the first non-blank record
// has custom_id, method and body; any other name is sniffed: JSONL (or
// OpenAI, by the same test) when the first non-blank byte is '{', else
// CSV. head may be the whole file or its first bytes; a first record cut
// short is judged by the keys it shows.
func Detect(name string, head []byte) Format {
	head = bytes.TrimPrefix(head, bom)
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return FormatCSV
	case ".jsonl", ".json", ".ndjson":
		return jsonlOrOpenAI(head)
	}
	if i := bytes.IndexFunc(head, func(r rune) bool { return !isSpace(r) }); i >= 0 && head[i] == '{' {
		return jsonlOrOpenAI(head)
	}
	return FormatCSV
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\r' || r == '\n' }

func jsonlOrOpenAI(data []byte) Format {
	if looksOpenAI(firstRecord(data)) {
		return FormatOpenAI
	}
	return FormatJSONL
}

// firstRecord returns the first non-blank line of data.
func firstRecord(data []byte) []byte {
	for len(data) > 0 {
		var line []byte
		line, data = cutLine(data)
		if !blank(line) {
			return line
		}
	}
	return nil
}

// looksOpenAI reports whether the JSON object that rec starts has the
// top-level keys custom_id, method and body. rec may be cut short: the
// keys seen before the cut count.
func looksOpenAI(rec []byte) bool {
	d := json.NewDecoder(bytes.NewReader(rec))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	var customID, method, body bool
	for !customID || !method || !body {
		t, err := d.Token()
		if err != nil {
			break
		}
		k, ok := t.(string)
		if !ok { // the closing '}'
			break
		}
		switch k {
		case "custom_id":
			customID = true
		case "method":
			method = true
		case "body":
			body = true
		}
		var skip json.RawMessage
		if d.Decode(&skip) != nil {
			break
		}
	}
	return customID && method && body
}

// Parse parses one input file's bytes. f FormatAuto (or "") detects;
// FormatJSONL becomes FormatOpenAI when the first non-blank record looks
// like an OpenAI batch request (see the package doc); the format used is
// returned, also with an error. column "" is DefaultColumn; it is not used
// for OpenAI batch files. An error means the file as a whole cannot be
// read as that format (the file fails); it does not name the file. A bad
// row is a Row with Err.
func Parse(name string, data []byte, f Format, column string) (Format, []Row, error) {
	data = bytes.TrimPrefix(data, bom)
	if column == "" {
		column = DefaultColumn
	}
	switch f {
	case FormatAuto, "":
		f = Detect(name, data)
	case FormatJSONL:
		f = jsonlOrOpenAI(data)
	case FormatCSV, FormatOpenAI:
	default:
		return f, nil, fmt.Errorf("unknown input format %q (want auto, csv, jsonl or openai)", string(f))
	}
	if err := checkLines(data); err != nil {
		return f, nil, err
	}
	var rows []Row
	var err error
	switch f {
	case FormatCSV:
		rows, err = parseCSV(data, column)
	case FormatJSONL:
		rows = parseJSONL(data, column)
	case FormatOpenAI:
		rows = parseOpenAI(data)
	}
	if err != nil {
		return f, nil, err
	}
	if len(rows) == 0 {
		rows = nil
	}
	return f, rows, nil
}

// checkLines fails when a line of data is longer than MaxLineBytes.
func checkLines(data []byte) error {
	for n := 1; len(data) > 0; n++ {
		var line []byte
		line, data = cutLine(data)
		if l := len(bytes.TrimSuffix(line, []byte("\r"))); l > MaxLineBytes {
			return fmt.Errorf("line %d is %d bytes long; lines of at most %d bytes (16 MiB) are allowed", n, l, MaxLineBytes)
		}
	}
	return nil
}

// ReadFile is Parse of the file at path (symbolic links followed), read
// whole. A file larger than MaxFileBytes (1 GiB), a folder or anything
// but a regular file is refused. Its errors name the path; those from
// the file system wrap the os package's (errors.Is(err, fs.ErrNotExist)).
func ReadFile(path string, f Format, column string) (Format, []Row, error) {
	fh, err := os.Open(path)
	if err != nil {
		return f, nil, err
	}
	defer func() { _ = fh.Close() }() // read only
	st, err := fh.Stat()
	if err != nil {
		return f, nil, err
	}
	if st.IsDir() {
		return f, nil, fmt.Errorf("%s: is a directory, not an input file", path)
	}
	if !st.Mode().IsRegular() {
		// A device or a pipe could stream without end.
		return f, nil, fmt.Errorf("%s: is not a regular file (%s)", path, st.Mode().Type())
	}
	if st.Size() > MaxFileBytes {
		return f, nil, fmt.Errorf("%s: the file is %d bytes; input files of at most %d bytes (1 GiB) are read", path, st.Size(), int64(MaxFileBytes))
	}
	data := make([]byte, 0, st.Size()+1)
	buf := bytes.NewBuffer(data)
	// The limit holds even when the file grows after Stat.
	if _, err := buf.ReadFrom(io.LimitReader(fh, MaxFileBytes+1)); err != nil {
		return f, nil, fmt.Errorf("%s: %w", path, err)
	}
	if buf.Len() > MaxFileBytes {
		return f, nil, fmt.Errorf("%s: the file is over %d bytes; input files of at most %d bytes (1 GiB) are read", path, int64(MaxFileBytes), int64(MaxFileBytes))
	}
	got, rows, err := Parse(path, buf.Bytes(), f, column)
	if err != nil {
		return got, nil, fmt.Errorf("%s: %w", path, err)
	}
	return got, rows, nil
}
