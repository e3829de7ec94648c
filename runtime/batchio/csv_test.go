package batchio

import (
	"encoding/csv"
	"errors"
	"strings"
	"testing"
)

func TestCSVQuoting(t *testing.T) {
	content := "\xef\xbb\xbf" + // a BOM
		"id,input_string,note\r\n" +
		"1,\"hello, world\",a\r\n" + // a comma inside quotes
		"2,\"she said \"\"hi\"\"\",b\r\n" + // doubled quotes
		"3,\"two\r\nlines\",c\r\n" + // CRLF inside quotes: encoding/csv gives \n
		"4,\"two\nlines\",d\n" + // LF inside quotes, LF ending
		"5,日本語のテキスト,e\r\n" +
		"6,emoji 🎉👍🏽 ok,f\r\n" +
		"7, leading and trailing space ,g\r\n" +
		"8,\"\",h\r\n" + // an empty quoted prompt
		"9,,i\r\n" + // an empty prompt
		"\r\n" + // an empty line: skipped, not numbered
		"10,\"\"\"quoted\"\" at both ends\"\"\",j\r\n" +
		"11,a\rb,k\r\n" + // a lone CR in an unquoted field is kept
		"12,last without newline,l"
	f, rows, err := readRows(t, "in.csv", content, FormatAuto, "")
	if err != nil || f != FormatCSV {
		t.Fatalf("format %q, err %v", f, err)
	}
	checkRows(t, rows, []want{
		{Line: 2, Prompt: "hello, world"},
		{Line: 3, Prompt: `she said "hi"`},
		{Line: 4, Prompt: "two\nlines"},
		{Line: 6, Prompt: "two\nlines"},
		{Line: 8, Prompt: "日本語のテキスト"},
		{Line: 9, Prompt: "emoji 🎉👍🏽 ok"},
		{Line: 10, Prompt: " leading and trailing space "},
		{Line: 11, Prompt: ""},
		{Line: 12, Prompt: ""},
		{Line: 14, Prompt: `"quoted" at both ends"`},
		{Line: 15, Prompt: "a\rb"},
		{Line: 16, Prompt: "last without newline"},
	})
	checkRowInvariants(t, f, rows)
}

func TestCSVEmptyAndHeaderOnly(t *testing.T) {
	for name, content := range map[string]string{
		"empty":                       "",
		"BOM only":                    "\xef\xbb\xbf",
		"blank lines":                 "\n\r\n\n",
		"header only":                 "input_string",
		"header only, LF":             "input_string\n",
		"header only, CRLF":           "input_string\r\n",
		"header and blank lines":      "a,input_string\n\n\n",
		"BOM and header":              "\xef\xbb\xbfinput_string,b\r\n",
		"header with the text column": "id,text\n",
	} {
		f, rows, err := readRows(t, "in.csv", content, FormatAuto, "")
		if err != nil || f != FormatCSV || len(rows) != 0 || rows != nil {
			t.Errorf("%s: format %q, %d rows, err %v; want csv, 0 rows, no error", name, f, len(rows), err)
		}
	}
}

func TestCSVMalformedRows(t *testing.T) {
	long := strings.Repeat("x", MaxPromptBytes+1)
	content := "input_string,n\n" +
		"good one,1\n" +
		"too,many,fields\n" +
		"good two,2\n" +
		"too few\n" +
		"bare\"quote,3\n" +
		"good three,4\n" +
		"\"extraneous\"quote,5\n" +
		"\"multi\nline\"x,6\n" + // an extraneous quote after a field spanning lines
		"bad \xff utf-8,7\n" +
		long + ",8\n" +
		"good four,9\n"
	f, rows, err := readRows(t, "in.csv", content, FormatAuto, "")
	if err != nil || f != FormatCSV {
		t.Fatalf("format %q, err %v", f, err)
	}
	checkRows(t, rows, []want{
		{Line: 2, Prompt: "good one"},
		{Line: 3, Err: "line 3: the row has 3 fields but the header has 2"},
		{Line: 4, Prompt: "good two"},
		{Line: 5, Err: "line 5: the row has 1 fields but the header has 2"},
		{Line: 6, Err: `line 6, column 5: invalid CSV: bare " in non-quoted-field`},
		{Line: 7, Prompt: "good three"},
		{Line: 8, Err: `line 8, column 12: invalid CSV: extraneous or missing " in quoted-field`},
		{Line: 9, Err: `line 9: invalid CSV in the row starting on this line, at line 10, column 5: extraneous or missing " in quoted-field`},
		{Line: 11, Err: `line 11: column "input_string" is not valid UTF-8`},
		{Line: 12, Err: "line 12: the prompt is 1048577 bytes long; prompts of at most 1048576 bytes (1 MiB) are allowed"},
		{Line: 13, Prompt: "good four"},
	})
	if !errors.Is(rows[4].Err, csv.ErrBareQuote) || !errors.Is(rows[6].Err, csv.ErrQuote) {
		t.Errorf("the CSV errors are not wrapped: %v, %v", rows[4].Err, rows[6].Err)
	}
	checkRowInvariants(t, f, rows)
}

// A quoted field never closed: on the last line only, a failed row; when
// it swallowed further lines, the file fails.
func TestCSVUnclosedQuote(t *testing.T) {
	_, rows, err := readRows(t, "in.csv", "input_string\nok\n\"never closed\n", FormatCSV, "")
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, rows, []want{
		{Line: 2, Prompt: "ok"},
		{Line: 3, Err: `line 3, column 15: invalid CSV: extraneous or missing " in quoted-field`},
	})
	_, rows, err = readRows(t, "in.csv", "input_string\nok\n\"never closed", FormatCSV, "")
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, rows, []want{
		{Line: 2, Prompt: "ok"},
		{Line: 3, Err: `line 3, column 14: invalid CSV: extraneous or missing " in quoted-field`},
	})

	path := writeFile(t, "in.csv", "a,input_string\n1,ok\n2,\"opened\n3,swallowed\n4,swallowed too\n")
	_, rows, err = ReadFile(path, FormatCSV, "")
	want := path + `: line 3: a quoted field opened in the row starting on this line is never closed, so the rest of the file would be one field; close it (and double any quote inside it)`
	if err == nil || err.Error() != want || rows != nil {
		t.Errorf("got %d rows, err %v\nwant err %s", len(rows), err, want)
	}
}

func TestCSVColumns(t *testing.T) {
	// "text" stands in for the default column only.
	_, rows, err := readRows(t, "in.csv", "id,text\n1,from text\n", FormatCSV, "")
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, rows, []want{{Line: 2, Prompt: "from text"}})
	_, rows, err = readRows(t, "in.csv", "id,text\n1,from text\n", FormatCSV, "input_string")
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, rows, []want{{Line: 2, Prompt: "from text"}})

	// input_string wins over text.
	_, rows, err = readRows(t, "in.csv", "text,input_string\nno,yes\n", FormatCSV, "")
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, rows, []want{{Line: 2, Prompt: "yes"}})

	// Another column.
	_, rows, err = readRows(t, "in.csv", "question,text\nq,t\n", FormatCSV, "question")
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, rows, []want{{Line: 2, Prompt: "q"}})

	for _, c := range []struct{ content, column, err string }{
		{"id,prompt\n1,x\n", "", `the CSV header has no column "input_string" (nor "text"); its columns are ["id" "prompt"]`},
		{"id,text\n1,x\n", "question", `the CSV header has no column "question"; its columns are ["id" "text"]`},
		{"id,Input_String\n", "", `the CSV header has no column "input_string" (nor "text"); its columns are ["id" "Input_String"]`},
		{"a\"b,input_string\n", "", `the CSV header cannot be read: line 1, column 2: invalid CSV: bare " in non-quoted-field`},
		{strings.Repeat("c,", 25) + "c\n", "", `the CSV header has no column "input_string" (nor "text"); its columns are ["c" "c" "c" "c" "c" "c" "c" "c" "c" "c" "c" "c" "c" "c" "c" "c" "c" "c" "c" "c" ... (6 more)]`},
	} {
		path := writeFile(t, "in.csv", c.content)
		_, rows, err := ReadFile(path, FormatCSV, c.column)
		if err == nil || err.Error() != path+": "+c.err || rows != nil {
			t.Errorf("%q: got %d rows, err %v\nwant err %s", c.content, len(rows), err, c.err)
		}
	}
}

func TestLineTooLong(t *testing.T) {
	for _, f := range []Format{FormatCSV, FormatJSONL, FormatOpenAI} {
		data := "input_string\nok\n" + strings.Repeat("y", MaxLineBytes+1) + "\r\n"
		got, rows, err := Parse("in", []byte(data), f, "")
		want := "line 3 is 16777217 bytes long; lines of at most 16777216 bytes (16 MiB) are allowed"
		if got != f || err == nil || err.Error() != want || rows != nil {
			t.Errorf("%s: format %q, %d rows, err %v", f, got, len(rows), err)
		}
		// Exactly the limit (CR not counted) is fine.
		data = "input_string\n" + strings.Repeat("y", MaxLineBytes) + "\r\n"
		if _, _, err := Parse("in", []byte(data), f, ""); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
