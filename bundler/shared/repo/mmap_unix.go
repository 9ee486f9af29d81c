//go:build unix

package repo

import (
	"os"
	"syscall"
)

// mapFile maps the first size bytes of f read-only: the bytes live in the
// page cache, not on the heap. unmap releases them.
func mapFile(f *os.File, size int) ([]byte, func(), error) {
	b, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { syscall.Munmap(b) }, nil
}

// mapScratch returns size bytes of a file-backed scratch mapping (f, a
// temporary file, is grown to size and may be removed once mapped): memory
// the kernel can write back to disk instead of heap. unmap releases it.
func mapScratch(f *os.File, size int) ([]byte, func(), error) {
	if err := f.Truncate(int64(size)); err != nil {
		return nil, nil, err
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { syscall.Munmap(b) }, nil
}
