//go:build !amd64 || purego

package sample

func argmax(logits []float32) int32 { return argmaxGo(logits) }
