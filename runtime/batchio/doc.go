// Package batchio reads the input files of `leo-runtime batch` and writes
// its output lines, exactly as docs/batch.md describes them: CSV and JSONL
// prompts (Azure Machine Learning's batch deployments), OpenAI's batch
// JSONL requests, the append_row predictions file and OpenAI's batch
// output JSONL. It does no I/O beyond reading one file (ReadFile) and has
// no state: the worker (runtime/batch) shards, journals and runs.
//
// # Files and rows
//
// Parse turns one file's bytes into Rows. An error from Parse means the
// file as a whole cannot be read as its format, and the file fails; a
// malformed row is a Row whose Err says why (with its 1-based line
// number), and the other rows go on. Row numbers (row_number_per_file)
// count data rows from 0, failed rows included. A UTF-8 byte order mark
// at the start of a file is skipped, whatever the format. Any line
// longer than MaxLineBytes (16 MiB) fails the file; a prompt longer than
// MaxPromptBytes (1 MiB) fails its row.
//
// # Formats
//
// Detect decides a file's format for FormatAuto: ".csv" is CSV;
// ".jsonl", ".json" and ".ndjson" are JSONL; any other name is sniffed,
// JSONL when the first non-blank byte is '{', else CSV. A JSONL file
// whose first non-blank record has the keys custom_id, method and body is
// an OpenAI batch file (FormatOpenAI). Parse applies that last test to
// FormatJSONL too (docs/batch.md counts OpenAI batch files among JSONL
// files, and `--format` offers no "openai"): the Format it returns is
// the one used. Extensions are compared case-insensitively.
//
// # CSV
//
// RFC 4180 via encoding/csv (no lazy quotes, a variable number of fields
// per record): a header row, then data rows; empty lines are skipped and
// not numbered. The prompt is the column named by the column argument
// (DefaultColumn when ""); when that is DefaultColumn and the header has
// no such column but has "text", "text" is used (Azure's samples). A
// header without the column fails the file, naming the column and
// listing the header. An empty file, or a header only, has 0 rows.
// A record whose number of fields differs from the header's, or whose
// prompt is not valid UTF-8, is a failed row.
//
// Malformed quoting: encoding/csv stops a record at a bare quote in an
// unquoted field (a"b) or at a quote followed by something other than a
// comma or line end inside a quoted field ("a"b), discards the rest of
// that line and goes on with the next line. Such a record is a failed
// row (its Err wraps csv.ErrBareQuote or csv.ErrQuote), and the rows
// after it are read as usual. A quoted field that is never closed,
// though, swallows every line after its opening quote: when that record
// spans more than one line, the file fails (the rows after it cannot be
// told apart); when it is on the file's last line only, it is a failed
// row. A malformed header fails the file.
//
// # JSONL
//
// One JSON object per line ("\r\n" tolerated); lines of only spaces,
// tabs and CRs are blank: skipped and not numbered. The prompt is the
// string under the column key. The optional "parameters" object overrides
// the run's generation parameters per row: max_new_tokens, temperature,
// top_p, top_k, do_sample, repetition_penalty, stop (a string or a list
// of strings), seed, return_full_text, ignore_eos. As in `leo-runtime
// serve`, JSON null means "not given", an integer may be written as a
// whole float (100.0, 1e2), and a seed is any integer in [-2⁶³, 2⁶⁴-1]
// (a negative one stands for the uint64 of the same bits). A value of
// the wrong type fails the row with the key's path ("parameters.top_k
// must be an integer (got a string)"); ranges (top_p in (0, 1], ...) are
// left to sample.Params.Validate, which sees the run's parameters merged
// with the row's. num_return_sequences other than 1 fails the row (a
// batch row has one prediction); other keys are ignored and listed in
// Row.Ignored. A line that is not a JSON object, or whose prompt is
// missing, null or not a string, fails its row; so does a line that is
// not valid UTF-8.
//
// # OpenAI batch JSONL
//
// Each line is {"custom_id", "method": "POST", "url", "body"} with url
// "/v1/chat/completions" (body.messages: a non-empty list of {"role",
// "content"}, content a string, a list of {"type": "text", "text"} parts
// joined with "\n", or null for "") or "/v1/completions" (body.prompt: a
// string). The body is read as `leo-runtime serve` reads one:
// max_completion_tokens (which wins) or max_tokens, temperature (which
// also sets do_sample: temperature 0 is greedy, as in OpenAI's API),
// top_p, stop, seed, and vLLM's top_k (-1 is off), repetition_penalty and
// ignore_eos become the row's Overrides, and a completion's echo is
// return_full_text. Parameters not given are the run's (OpenAI's own
// defaults, such as sampling at temperature 1, do not apply). A role
// "developer" is "system". n must be 1 (or absent), and the parameters
// that would change the answer but are not implemented are refused, as
// serve refuses them: logprobs, top_logprobs, best_of > 1, a non-empty
// suffix, presence and frequency penalties, logit_bias, min_tokens, a
// response_format other than text, tools. model, stream, stream_options,
// user, metadata and store are accepted and ignored; other keys are
// ignored and listed in Row.Ignored.
//
// A row without a custom_id (or with one that is not a non-empty string)
// fails, and so does a row whose custom_id an earlier row of the file
// has (the first keeps it, whether it failed or not, so that output
// lines never share a custom_id). CustomID and URL are set on failed
// rows too when they could be read, for the output's error line.
//
// # Outputs
//
// AppendPrediction writes one append_row line, quoting a field per RFC
// 4180 only when it holds a comma, a quote, CR or LF. encoding/csv's
// Reader reads such a line back to the same three fields, except that it
// turns "\r\n" inside a quoted field into "\n" (its documented
// normalization; the bytes written are the prediction's). AppendOpenAIResult
// writes one line of OpenAI's batch output with a fixed key order and
// encoding/json's string escaping (without HTML escaping), so equal
// results give equal bytes.
package batchio
