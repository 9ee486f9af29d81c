package engine

import "bytes"

// Test hooks for the unexported parsers.
var (
	FilterSaveTar  = filterSaveTar
	ReadLoadOutput = func(data []byte, isJSON bool) ([]string, []string, error) {
		out, err := readLoadOutput(bytes.NewReader(data), isJSON)
		return out.IDs, out.Names, err
	}
)
