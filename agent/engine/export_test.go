package engine

import (
	"bytes"
	"io"
)

// Test hooks for the unexported parsers.
var (
	FilterSaveTar = func(w io.Writer, r io.Reader, check func(string) error) (saveFacts, error) {
		return filterSaveTar(w, r, check, nil)
	}
	ReadLoadOutput = func(data []byte, isJSON bool) ([]string, []string, error) {
		out, err := readLoadOutput(bytes.NewReader(data), isJSON)
		return out.IDs, out.Names, err
	}
)
