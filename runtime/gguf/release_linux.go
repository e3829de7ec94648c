package gguf

import (
	"syscall"
	"unsafe"
)

// release advises the kernel that the whole pages inside b (a part of the
// mapping data) are not needed.
func release(data, b []byte) {
	page := uintptr(syscall.Getpagesize())
	base := uintptr(unsafe.Pointer(&data[0]))
	start := uintptr(unsafe.Pointer(&b[0])) - base
	end := start + uintptr(len(b))
	start = (start + page - 1) &^ (page - 1)
	end &^= page - 1
	if end > start {
		_ = syscall.Madvise(data[start:end], syscall.MADV_DONTNEED)
	}
}
