package batch

import (
	"context"

	"github.com/leo-operator/leo/runtime/sample"
)

// Job is one row to generate for.
type Job struct {
	// Prompt is the text to complete; Messages, when set, a conversation
	// that the scorer formats with the model's chat template instead.
	Prompt   string
	Messages []Message
	Params   sample.Params
}

// Message is one turn of a conversation.
type Message struct{ Role, Content string }

// Result is a job's outcome.
type Result struct {
	Text                           string
	Finish                         sample.FinishReason
	PromptTokens, CompletionTokens int
	// Err is a problem of this row alone (a prompt too long for the
	// context, parameters the engine refuses): the row fails, the others
	// go on.
	Err error
}

// Scorer generates the rows of the mini-batches in flight. Score returns
// one Result per job, in order; its error fails the whole call (the
// engine failed, or ctx ended: the mini-batch's timeout, or the worker is
// stopping), which the worker retries. Score is called concurrently, once
// per mini-batch in flight; an implementation should run all their jobs
// together (EngineScorer hands them to one engine, which batches them).
type Scorer interface {
	Score(ctx context.Context, jobs []Job) ([]Result, error)
}
