//go:build !amd64 || purego

package cpu

func platformKernels() []kernelSet { return []kernelSet{goKernels} }
