// Package batch is the worker of `leo-runtime batch` (docs/batch.md): it
// scores the rows of a folder of input files exactly once, with Azure ML
// batch semantics, whatever crashes and restarts happen in between.
//
// The input's files are listed and sorted; file k belongs to worker
// k mod instance-count (its shard), and a shard is cut into mini-batches
// of mini-batch-size files. A worker runs up to max-concurrency mini-
// batches at once; every row of every mini-batch in flight goes to the
// Scorer together, so that the engine behind it batches them
// continuously. A mini-batch that fails or times out is tried again, up
// to max-retries more times, then its files count as failed.
//
// Exactly once: a finished mini-batch is one record of the shard's
// journal (its counts, its errors and its output bytes), appended with a
// length and a CRC32C and fsync'ed before it counts as done. Output rows
// are written nowhere else, so a worker killed at any moment loses at
// most the mini-batches in flight, which its next run redoes; a torn
// last record is dropped. When every shard is complete (each writes a
// done marker after its last record), the final files are made from the
// journals, shard by shard, mini-batch by mini-batch, and renamed into
// place: the output of a run killed and resumed any number of times is
// the bytes of an uninterrupted run, given deterministic generation
// (greedy, or seeded sampling; the engine's tokens do not depend on the
// other sequences of its batch).
//
// The worker does not know the engine: it hands rows to a Scorer, which
// EngineScorer implements over *engine.Engine.
package batch
