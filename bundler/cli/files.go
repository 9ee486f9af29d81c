package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/pullship/pullship/bundler/shared/atomicfile"
)

// writeNew writes a file that must not exist yet, so that no command
// silently replaces a key or a root.
func writeNew(path string, data []byte, perm os.FileMode) error {
	err := atomicfile.WriteNew(path, data, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; remove it or choose another name", path)
	}
	return err
}

// writeAtomic replaces path durably, so a reader sees the old or the new
// file, never half of one.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	return atomicfile.WriteFile(path, bytes.NewReader(data), perm)
}
