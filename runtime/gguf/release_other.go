//go:build !linux

package gguf

// release is a no-op where MADV_DONTNEED is not relied on.
func release(data, b []byte) {}
