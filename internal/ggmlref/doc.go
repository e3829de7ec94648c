// Package ggmlref runs GGML's own conversion code, loaded at run time from
// the libggml-base.so that llama.cpp's builds ship, so that tests can hold
// leo's Go code to GGML's results bit for bit.
//
// The library is dlopen'ed from a path given at run time (PeerLib installs
// and finds the pinned one, from node-llama-cpp 3.21.1), so nothing links
// against GGML. Open and Lib need cgo (test files cannot use cgo
// themselves, hence this package); PeerLib does not.
package ggmlref
