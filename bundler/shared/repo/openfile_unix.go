//go:build unix

package repo

import (
	"fmt"
	"os"
	"syscall"
)

// openRegular opens path for reading only if it is a regular file: a link
// is not followed (O_NOFOLLOW), a FIFO does not block the open
// (O_NONBLOCK), and the file opened is the one checked (fstat), so a
// special file swapped in after a check by name is refused, not read.
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	return f, nil
}
