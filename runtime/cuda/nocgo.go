//go:build !cgo || !linux

package cuda

import (
	"fmt"

	"github.com/leo-operator/leo/runtime/cpu"
)

// Backend is the GPU backend; this build of leo-runtime has none.
type Backend struct {
	cpu.Backend
	Info DeviceInfo
}

// Open says that this binary cannot load the library: loading a shared
// library needs cgo (and Linux).
func Open(cpu.Backend, Options) (*Backend, error) {
	return nil, fmt.Errorf("%w: this leo-runtime was built without cgo, which loading %s needs", ErrUnavailable, LibraryName)
}

// Close does nothing.
func (b *Backend) Close() error { return nil }
