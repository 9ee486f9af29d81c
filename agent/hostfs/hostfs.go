// Package hostfs is how pullship-agent touches node files, the files a
// release places on the host under the configured allowed_dirs: it reads,
// hashes, backs up, writes and removes them without ever following a
// symbolic link, relative to the allowed directory opened once.
//
// The directories below an allowed directory are often a container's bind
// mount, writable by code the release runs and so not trusted: between two
// steps of an apply (or before a rollback) it can turn any directory on the
// way into a symbolic link, a file into a link, a FIFO or a hard link to
// another file. Every operation therefore walks the path one element at a
// time from the opened allowed directory (an [os.Root]), refuses a link or
// a non-directory on the way, and checks that what it opened is what it
// looked at (same device and inode). Reading accepts only a regular file
// with one link. Writes are atomicfile's: temporary file, fsync, rename,
// fsync of the directory, all within the directory opened.
//
// Only the agent imports it.
package hostfs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pullship/pullship/bundler/shared/atomicfile"
	"github.com/pullship/pullship/schema"
)

// Errors callers (and tests) branch on; each is wrapped with the path.
var (
	// ErrNotAllowed means the path is not under an allowed directory.
	ErrNotAllowed = errors.New("outside allowed_dirs")
	// ErrSymlink means an element of the path is a symbolic link (or was
	// replaced while it was being opened).
	ErrSymlink = errors.New("a symbolic link or a replaced directory on the way; refusing to follow it")
	// ErrNotRegular means the file is not a regular file with a single
	// link (a symbolic link, directory, FIFO, device, socket or hard link).
	ErrNotRegular = errors.New("not a regular file with one link")
	// ErrTooLarge means the file is larger than any node file may be
	// (schema.MaxFileLength): it is not read.
	ErrTooLarge = errors.New("larger than a node file may be")
)

// maxRead bounds what is read of a node file: no release writes more.
var maxRead int64 = schema.MaxFileLength

// Dirs are the allowed directories: clean absolute paths, as config checks
// them. They are trusted (the operator's); what lies below them is not.
type Dirs []string

// Lstat describes the file at path without following a link.
func (d Dirs) Lstat(path string) (fs.FileInfo, error) {
	dir, base, err := d.parent(path, false)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	fi, err := dir.Lstat(base)
	if err != nil {
		return nil, fmt.Errorf("node file %s: %w", path, err)
	}
	return fi, nil
}

// Open opens the regular file at path for reading (see [ErrNotRegular]);
// reading more than a node file may hold fails with [ErrTooLarge], so a
// file that grows while it is read is cut. The error wraps
// [fs.ErrNotExist] when it (or a directory on the way) is missing.
func (d Dirs) Open(path string) (io.ReadCloser, fs.FileInfo, error) {
	dir, base, err := d.parent(path, false)
	if err != nil {
		return nil, nil, err
	}
	defer dir.Close()
	fi, err := dir.Lstat(base)
	if err != nil {
		return nil, nil, fmt.Errorf("node file %s: %w", path, err)
	}
	if err := regular(fi); err != nil {
		return nil, nil, fmt.Errorf("node file %s: %w", path, err)
	}
	// O_NONBLOCK: a FIFO swapped in after the Lstat does not hang the open
	// (and is refused below).
	f, err := dir.OpenFile(base, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("node file %s: %w", path, err)
	}
	ofi, err := f.Stat()
	if err == nil && !os.SameFile(fi, ofi) {
		err = ErrSymlink
	}
	if err == nil {
		err = regular(ofi)
	}
	if err == nil && ofi.Size() > maxRead {
		err = fmt.Errorf("%w (%d bytes)", ErrTooLarge, ofi.Size())
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("node file %s: %w", path, err)
	}
	return &bounded{f: f, left: maxRead, path: path}, ofi, nil
}

// bounded reads at most left bytes of f; one more is ErrTooLarge.
type bounded struct {
	f    *os.File
	left int64
	path string
}

func (b *bounded) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.f.Read(p)
	if int64(n) > b.left {
		return int(b.left), fmt.Errorf("node file %s: %w (grew while read)", b.path, ErrTooLarge)
	}
	b.left -= int64(n)
	return n, err
}

func (b *bounded) Close() error { return b.f.Close() }

// SHA256 is the hex sha256 of the regular file at path.
func (d Dirs) SHA256(path string) (string, error) {
	f, _, err := d.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Write replaces the file at path with the content of r (mode perm),
// creating missing directories (0755) below the allowed directory. Whatever
// was at path (a file, a link) is replaced, never written through.
func (d Dirs) Write(path string, r io.Reader, perm fs.FileMode) error {
	dir, base, err := d.parent(path, true)
	if err != nil {
		return err
	}
	defer dir.Close()
	return atomicfile.WriteFileIn(dir, base, r, perm)
}

// Remove removes the file at path (a link itself, not what it points at);
// a missing file is no error.
func (d Dirs) Remove(path string) error {
	dir, base, err := d.parent(path, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer dir.Close()
	return atomicfile.RemoveIn(dir, base)
}

// parent opens the directory holding path, one element at a time from its
// allowed directory, and returns it with path's last element. With create,
// missing directories are made.
func (d Dirs) parent(path string, create bool) (*os.Root, string, error) {
	top, rel, ok := d.split(path)
	if !ok {
		return nil, "", fmt.Errorf("node file %s: %w %v", path, ErrNotAllowed, []string(d))
	}
	if create {
		// The allowed directory itself is the operator's path, made as
		// they named it.
		if err := os.MkdirAll(top, 0o755); err != nil {
			return nil, "", fmt.Errorf("node file %s: %w", path, err)
		}
	}
	cur, err := os.OpenRoot(top)
	if err != nil {
		return nil, "", fmt.Errorf("node file %s: %w", path, err)
	}
	elems := strings.Split(rel, "/")
	for _, e := range elems[:len(elems)-1] {
		next, err := openDir(cur, e, create)
		cur.Close()
		if err != nil {
			return nil, "", fmt.Errorf("node file %s: %w", path, err)
		}
		cur = next
	}
	return cur, elems[len(elems)-1], nil
}

// openDir opens the directory name (one element) in dir without following
// a link: what is opened must be the directory Lstat saw.
func openDir(dir *os.Root, name string, create bool) (*os.Root, error) {
	fi, err := dir.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err = dir.Mkdir(name, 0o755); err == nil || errors.Is(err, fs.ErrExist) {
			fi, err = dir.Lstat(name)
		}
	}
	if err != nil {
		return nil, err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, fmt.Errorf("%s: %w", name, ErrSymlink)
	case !fi.IsDir():
		return nil, fmt.Errorf("%s: %w", name, syscall.ENOTDIR)
	}
	next, err := dir.OpenRoot(name)
	if err != nil {
		return nil, err
	}
	nfi, err := next.Stat(".")
	if err == nil && !os.SameFile(fi, nfi) {
		err = fmt.Errorf("%s: %w", name, ErrSymlink)
	}
	if err != nil {
		next.Close()
		return nil, err
	}
	return next, nil
}

// split finds the allowed directory holding path (the deepest, when they
// nest) and path relative to it.
func (d Dirs) split(path string) (top, rel string, ok bool) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return "", "", false
	}
	for _, a := range d {
		if r, found := strings.CutPrefix(path, a+"/"); found && len(a) > len(top) {
			top, rel, ok = a, r, true
		}
	}
	return top, rel, ok
}

func regular(fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w (it is %s)", ErrNotRegular, kind(fi.Mode()))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && uint64(st.Nlink) > 1 {
		return fmt.Errorf("%w (it has %d links)", ErrNotRegular, st.Nlink)
	}
	return nil
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}
