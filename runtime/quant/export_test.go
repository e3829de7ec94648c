package quant

// StoriesWeights lets the external tests (ggml_test.go) use the real weights.
var StoriesWeights = storiesWeights
