package batchio

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// AppendPrediction appends one append_row line:
// row_number_per_file,prediction,batch_input_file_name and "\n", each
// field quoted per RFC 4180 only when it must be (it holds a comma, a
// quote, CR or LF; quotes inside are doubled). encoding/csv's Writer
// quotes more (a leading space, `\.`), hence this. Bytes are written as
// they are, invalid UTF-8 included.
func AppendPrediction(dst []byte, row int, prediction, file string) []byte {
	dst = strconv.AppendInt(dst, int64(row), 10)
	dst = append(dst, ',')
	dst = appendCSVField(dst, prediction)
	dst = append(dst, ',')
	dst = appendCSVField(dst, file)
	return append(dst, '\n')
}

// appendCSVField appends s, quoted when it holds a comma, a quote, CR or LF.
func appendCSVField(dst []byte, s string) []byte {
	if !strings.ContainsAny(s, ",\"\r\n") {
		return append(dst, s...)
	}
	dst = append(dst, '"')
	for {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			break
		}
		dst = append(dst, s[:i+1]...)
		dst = append(dst, '"')
		s = s[i+1:]
	}
	dst = append(dst, s...)
	return append(dst, '"')
}

// OpenAIResult is one line of OpenAI batch output.
type OpenAIResult struct {
	ID         string // "batch_req_..." (the caller derives it deterministically)
	CustomID   string
	StatusCode int // 200 for a success
	RequestID  string
	Body       json.RawMessage // the response object, for a success
	ErrCode    string          // for a failure: code and message; Body nil
	ErrMessage string
}

// Failed reports whether r is a failure: ErrCode or ErrMessage is set.
func (r OpenAIResult) Failed() bool { return r.ErrCode != "" || r.ErrMessage != "" }

// Error codes AppendOpenAIResult itself writes.
const (
	// ErrCodeInvalidBody replaces a success whose Body is not valid JSON.
	ErrCodeInvalidBody = "invalid_response_body"
)

// AppendOpenAIResult appends the result as one JSON line and "\n":
//
//	{"id":ID,"custom_id":CUSTOM_ID,"response":{"status_code":N,"request_id":REQUEST_ID,"body":BODY},"error":null}
//
// for a success, or, for a failure (Failed: ErrCode or ErrMessage set;
// StatusCode, RequestID and Body are then not written),
//
//	{"id":ID,"custom_id":CUSTOM_ID,"response":null,"error":{"code":ERR_CODE,"message":ERR_MESSAGE}}
//
// No spaces, keys in this order, strings escaped as encoding/json does
// without HTML escaping (invalid UTF-8 becomes U+FFFD; U+2028 and U+2029
// are escaped), Body compacted (json.Compact); a nil or empty Body is
// null. A Body that is not valid JSON (or not valid UTF-8) is not written: the line is a
// failure with code ErrCodeInvalidBody instead. Equal inputs give equal
// bytes.
func AppendOpenAIResult(dst []byte, r OpenAIResult) []byte {
	var body []byte
	if !r.Failed() && len(bytes.TrimSpace(r.Body)) > 0 {
		var b bytes.Buffer
		switch err := json.Compact(&b, r.Body); {
		case err != nil:
			r.ErrCode, r.ErrMessage = ErrCodeInvalidBody, "the response body is not valid JSON: "+err.Error()
		case !utf8.Valid(b.Bytes()):
			r.ErrCode, r.ErrMessage = ErrCodeInvalidBody, "the response body is not valid UTF-8"
		default:
			body = b.Bytes()
		}
	}
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, r.ID)
	dst = append(dst, `,"custom_id":`...)
	dst = appendJSONString(dst, r.CustomID)
	if r.Failed() {
		dst = append(dst, `,"response":null,"error":{"code":`...)
		dst = appendJSONString(dst, r.ErrCode)
		dst = append(dst, `,"message":`...)
		dst = appendJSONString(dst, r.ErrMessage)
		return append(dst, "}}\n"...)
	}
	dst = append(dst, `,"response":{"status_code":`...)
	dst = strconv.AppendInt(dst, int64(r.StatusCode), 10)
	dst = append(dst, `,"request_id":`...)
	dst = appendJSONString(dst, r.RequestID)
	dst = append(dst, `,"body":`...)
	if body == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, body...)
	}
	return append(dst, `},"error":null}`+"\n"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaped exactly as
// encoding/json escapes it with SetEscapeHTML(false): '"' and '\\'
// backslashed; \b, \f, \n, \r, \t short; other bytes below 0x20 as
// \u00XX; U+2028 and U+2029 as \u2028 and \u2029; each byte of invalid
// UTF-8 as \ufffd. It is written here so that the bytes do not change
// with the Go release.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
