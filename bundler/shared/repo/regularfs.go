package repo

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
)

// regularFS is a store's directory as go-git reads it (loose objects,
// packs, refs): every file it opens for reading is opened by openRegular,
// so a link, a FIFO or a device where a file should be (a removable
// disk's store) is refused at the open, whatever was there when the
// store last looked. Writes go to the directory as they are.
type regularFS struct {
	billy.Filesystem
	dir string
}

func newRegularFS(dir string) regularFS { return regularFS{Filesystem: osfs.New(dir), dir: dir} }

func (fs regularFS) Open(name string) (billy.File, error) {
	f, err := openRegular(filepath.Join(fs.dir, filepath.FromSlash(name)))
	if err != nil {
		return nil, err
	}
	return regularFile{File: f, name: name}, nil
}

// regularFile is an *os.File as a billy.File, named as it was opened
// (relative to the store: go-git opens a pack again by its name).
type regularFile struct {
	*os.File
	name string
}

func (f regularFile) Name() string { return f.name }
func (regularFile) Lock() error    { return nil }
func (regularFile) Unlock() error  { return nil }

// readRegular returns the content of the regular file at path, at most
// limit bytes (more is an error): refs and packed-refs, which a
// removable disk's store may make a FIFO (a read that never ends) or a
// file of gigabytes.
func readRegular(path string, limit int64) ([]byte, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}

// Size limits of the ref files a store reads: a loose ref is an object id
// and a newline; packed-refs holds a line of about 60 bytes a ref (16 MiB:
// over 250,000 refs; a fleet of 10,000 nodes has as many status branches).
const (
	maxLooseRef   = 4 << 10
	maxPackedRefs = 16 << 20
)
