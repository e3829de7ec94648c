// Package conformance checks leo's runtime against llama.cpp, an
// independent implementation, on the same GGUF files: generated
// random-weight models of two shapes in every weight type, and Karpathy's
// trained stories260K converted to GGUF. llama.cpp runs through the npm
// package node-llama-cpp (internal/peer). The package has only tests.
package conformance
