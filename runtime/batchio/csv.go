package batchio

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// parseCSV reads data (its BOM already gone) as CSV with a header; see
// the package doc.
func parseCSV(data []byte, column string) ([]Row, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.LazyQuotes = false
	r.ReuseRecord = true

	header, err := r.Read()
	if err == io.EOF {
		return nil, nil // an empty file
	}
	if err != nil {
		return nil, fmt.Errorf("the CSV header cannot be read: %w", csvError(err))
	}
	header = slices.Clone(header) // ReuseRecord: the next Read overwrites it
	col := index(header, column)
	if col < 0 && column == DefaultColumn {
		col = index(header, FallbackColumn)
	}
	if col < 0 {
		also := ""
		if column == DefaultColumn {
			also = fmt.Sprintf(" (nor %q)", FallbackColumn)
		}
		return nil, fmt.Errorf("the CSV header has no column %q%s; its columns are %s", column, also, listColumns(header))
	}
	width := len(header)

	// At most one row a non-empty line: one allocation, not append's
	// copies of Rows, which are large (and none for empty lines).
	rows := make([]Row, 0, nonEmptyLines(data[r.InputOffset():]))
	for {
		start := r.InputOffset()
		rec, err := r.Read()
		if err == io.EOF {
			return rows, nil
		}
		row := Row{Number: len(rows)}
		var pe *csv.ParseError
		switch {
		case errors.As(err, &pe):
			row.Line = pe.StartLine
			if errors.Is(pe.Err, csv.ErrQuote) && r.InputOffset() == int64(len(data)) && unclosedQuote(data[start:]) {
				return nil, fmt.Errorf("line %d: a quoted field opened in the row starting on this line is never closed, so the rest of the file would be one field; close it (and double any quote inside it)", pe.StartLine)
			}
			row.Err = csvError(err)
		case err != nil: // cannot happen: a bytes.Reader does not fail
			return nil, fmt.Errorf("reading CSV: %w", err)
		default:
			row.Line, _ = r.FieldPos(0)
			switch p := rec[min(col, len(rec)-1)]; {
			case len(rec) != width:
				row.Err = fmt.Errorf("line %d: the row has %d fields but the header has %d", row.Line, len(rec), width)
			case !utf8.ValidString(p):
				row.Err = fmt.Errorf("line %d: column %q is not valid UTF-8", row.Line, header[col])
			case len(p) > MaxPromptBytes:
				row.Err = promptTooLong(row.Line, len(p))
			default:
				row.Prompt = strings.Clone(p) // rec's strings share one allocation per record; keep only the prompt
			}
		}
		rows = append(rows, row)
	}
}

// nonEmptyLines counts the lines of data that encoding/csv does not skip:
// those with more than a line ending.
func nonEmptyLines(data []byte) int {
	n := 0
	for len(data) > 0 {
		var line []byte
		line, data = cutLine(data)
		if len(line) > 0 && string(line) != "\r" {
			n++
		}
	}
	return n
}

func promptTooLong(line, n int) error {
	return fmt.Errorf("line %d: the prompt is %d bytes long; prompts of at most %d bytes (1 MiB) are allowed", line, n, MaxPromptBytes)
}

// csvError words an encoding/csv error with its line and column; it wraps
// the csv package's (csv.ErrBareQuote, csv.ErrQuote).
func csvError(err error) error {
	var pe *csv.ParseError
	if !errors.As(err, &pe) {
		return err
	}
	if pe.StartLine != pe.Line {
		return fmt.Errorf("line %d: invalid CSV in the row starting on this line, at line %d, column %d: %w", pe.StartLine, pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("line %d, column %d: invalid CSV: %w", pe.Line, pe.Column, pe.Err)
}

// unclosedQuote reports whether the CSV record at the start of b (after
// empty lines, which encoding/csv skips) spans lines and ends inside a
// quoted field at the end of b: encoding/csv's ErrQuote for a quote
// never closed, whose record swallowed the rest of the file. It follows
// encoding/csv's reading up to the first error: a quoted field ends at a
// quote not doubled; what follows must be a comma (next field) or the
// line's end; anything else is ErrQuote, and the record ends there.
func unclosedQuote(b []byte) bool {
	for len(b) > 0 && (b[0] == '\n' || bytes.HasPrefix(b, []byte("\r\n"))) {
		b = b[bytes.IndexByte(b, '\n')+1:]
	}
	i := 0
	for {
		if i < len(b) && b[i] == '"' {
			opened := i
			i++
			for {
				j := bytes.IndexByte(b[i:], '"')
				if j < 0 {
					// Never closed: it matters when it swallowed a line end.
					return bytes.Contains(bytes.TrimRight(b[opened:], "\r\n"), []byte("\n"))
				}
				i += j + 1
				if i < len(b) && b[i] == '"' {
					i++ // a doubled quote
					continue
				}
				break
			}
			if i < len(b) && b[i] == ',' {
				i++
				continue
			}
			return false // the record's end, or an extraneous quote
		}
		j := bytes.IndexAny(b[i:], ",\n")
		if j < 0 || b[i+j] == '\n' {
			return false
		}
		i += j + 1
	}
}

// index returns the index of the first field of header named name, or -1.
func index(header []string, name string) int {
	for i, h := range header {
		if h == name {
			return i
		}
	}
	return -1
}

// listColumns lists a header's names for an error message, quoted, at
// most 20 of them and 64 bytes of each.
func listColumns(header []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, h := range header {
		if i == 20 {
			fmt.Fprintf(&b, " ... (%d more)", len(header)-i)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		if len(h) > 64 {
			h = strings.ToValidUTF8(h[:64], "") + "..."
		}
		fmt.Fprintf(&b, "%q", h)
	}
	b.WriteByte(']')
	return b.String()
}
