//go:build !unix

package repo

import (
	"io"
	"os"
)

// mapFile reads the first size bytes of f onto the heap (no mapping on
// this system).
func mapFile(f *os.File, size int) ([]byte, func(), error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, nil, err
	}
	return b, func() {}, nil
}

// mapScratch returns size bytes of heap (no mapping on this system).
func mapScratch(f *os.File, size int) ([]byte, func(), error) {
	return make([]byte, size), func() {}, nil
}
