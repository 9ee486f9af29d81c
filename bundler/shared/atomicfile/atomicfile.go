// Package atomicfile is pullship's one way to write a file durably: the
// content goes to a temporary file in the target's directory, which is
// fsynced, renamed over the target, and the directory is fsynced, so that a
// crash (or power loss) at any instant leaves the old file or the new one,
// never a mix or nothing.
//
// Both sides import it: the agent for its state, journal, backups, node
// files and keys, the release side for keys, roots and secrets, and the git
// store both share for refs and packs. TestDurableWritesUseAtomicfile keeps
// every other package from writing durable files by hand.
//
// Every operation can run relative to an opened directory ([os.Root]), and
// the final name is then one path element: nothing is resolved through a
// symbolic link, so a directory that hostile code can change (a container's
// bind mount) cannot send the write elsewhere.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// File is a pending replacement of a file: write to it, then Commit. Until
// Commit the target is untouched; Abort (or a crash) leaves only a
// temporary file, which the next write of the same target does not mind.
type File struct {
	*os.File // the temporary file
	dir      *os.Root
	ownDir   bool // dir was opened by Create, and is closed with the File
	tmp      string
	name     string
	done     bool
}

// Create starts the replacement of path, whose directory must exist. The
// file gets mode perm (not masked by the umask) when committed.
func Create(path string, perm fs.FileMode) (*File, error) {
	dir, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	f, err := CreateIn(dir, filepath.Base(path), perm)
	if err != nil {
		dir.Close()
		return nil, err
	}
	f.ownDir = true
	return f, nil
}

// CreateIn is Create for the file name (one path element) in dir.
func CreateIn(dir *os.Root, name string, perm fs.FileMode) (*File, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("write %s: %w", filepath.Join(dir.Name(), name), err)
	}
	for range 10 {
		var rnd [6]byte
		rand.Read(rnd[:])
		tmp := "." + name + ".tmp-" + hex.EncodeToString(rnd[:])
		f, err := open(dir, name, tmp, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("write %s: no free temporary name", filepath.Join(dir.Name(), name))
}

// Lock starts the replacement of path under git's lock protocol: the
// temporary file is path+".lock", created exclusively, so a second writer
// (pullship or git) fails with an error wrapping [fs.ErrExist] until this
// one commits or aborts. The directory must exist.
func Lock(path string, perm fs.FileMode) (*File, error) {
	dir, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	name := filepath.Base(path)
	if err := checkName(name); err != nil {
		dir.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f, err := open(dir, name, name+".lock", perm)
	if err != nil {
		dir.Close()
		return nil, err
	}
	f.ownDir = true
	return f, nil
}

func open(dir *os.Root, name, tmp string, perm fs.FileMode) (*File, error) {
	fh, err := dir.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", filepath.Join(dir.Name(), name), err)
	}
	// Chmod on the descriptor: the umask does not apply, and no path is
	// resolved again.
	if err := fh.Chmod(perm); err != nil {
		fh.Close()
		dir.Remove(tmp)
		return nil, fmt.Errorf("write %s: %w", filepath.Join(dir.Name(), name), err)
	}
	return &File{File: fh, dir: dir, tmp: tmp, name: name}, nil
}

// Commit makes the written content the file's: fsync, rename over the
// target, fsync the directory.
func (f *File) Commit() error { return f.CommitAs(f.name) }

// SyncEarly writes what the file holds so far to disk, ahead of CommitAs
// (which syncs again, finding little left): a writer that must commit
// under a lock syncs first, outside it.
func (f *File) SyncEarly() error {
	if f.done {
		return os.ErrClosed
	}
	return f.File.Sync()
}

// CommitAs is Commit under another name (one path element) in the same
// directory, for files named after their content once it is written.
func (f *File) CommitAs(name string) error {
	if f.done {
		return fmt.Errorf("write %s: %w", f.path(name), os.ErrClosed)
	}
	f.done = true
	defer f.closeDir()
	err := checkName(name)
	if err == nil {
		err = f.File.Sync()
	}
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = f.dir.Rename(f.tmp, name)
	}
	if err != nil {
		f.dir.Remove(f.tmp)
		return fmt.Errorf("write %s: %w", f.path(name), err)
	}
	if err := syncDir(f.dir); err != nil {
		return fmt.Errorf("write %s: %w", f.path(name), err)
	}
	return nil
}

// Abort drops the replacement; the target is left as it was. It does
// nothing after Commit, so it can be deferred.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	f.dir.Remove(f.tmp)
	f.closeDir()
}

func (f *File) closeDir() {
	if f.ownDir {
		f.dir.Close()
	}
}

func (f *File) path(name string) string { return filepath.Join(f.dir.Name(), name) }

// WriteFile replaces path with the content of r (see the package doc).
func WriteFile(path string, r io.Reader, perm fs.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	return fill(f, r)
}

// WriteFileIn is WriteFile for the file name (one path element) in dir.
func WriteFileIn(dir *os.Root, name string, r io.Reader, perm fs.FileMode) error {
	f, err := CreateIn(dir, name, perm)
	if err != nil {
		return err
	}
	return fill(f, r)
}

func fill(f *File, r io.Reader) error {
	defer f.Abort()
	if _, err := io.Copy(f.File, r); err != nil {
		return fmt.Errorf("write %s: %w", f.path(f.name), err)
	}
	return f.Commit()
}

// WriteNew creates path with data, durably, and fails with an error
// wrapping [fs.ErrExist] when path exists: for keys and roots, which no
// command may silently replace. No reader ever sees the file partly
// written (it is linked into place whole).
func WriteNew(path string, data []byte, perm fs.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	_, err = f.File.Write(data)
	if err == nil {
		err = f.File.Sync()
	}
	if err == nil {
		// link(2), unlike rename(2), fails when the name is taken.
		err = f.dir.Link(f.tmp, f.name)
	}
	if err == nil {
		err = syncDir(f.dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Remove removes path durably (the directory is fsynced); a missing file
// is no error.
func Remove(path string) error {
	dir, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", path, err)
	}
	defer dir.Close()
	return RemoveIn(dir, filepath.Base(path))
}

// RemoveIn is Remove for the name (one path element) in dir. A symbolic
// link is removed itself, never what it points at.
func RemoveIn(dir *os.Root, name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("remove %s: %w", filepath.Join(dir.Name(), name), err)
	}
	if err := dir.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", filepath.Join(dir.Name(), name), err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("remove %s: %w", filepath.Join(dir.Name(), name), err)
	}
	return nil
}

// SyncDir fsyncs dir, making renames and removals in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func syncDir(dir *os.Root) error {
	d, err := dir.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ErrName means a name passed where one path element is wanted is not one.
var ErrName = errors.New("not a single path element")

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("%q: %w", name, ErrName)
	}
	return nil
}
