package repo

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// pullship decodes trees, commits and tags itself: go-git's plumbing/object
// links a diff library into every program that imports it (the agent must
// not), and it reads objects of any size and entry count. What a store
// reads of them is bounded here, before and while decoding.
const (
	// maxTreeEntries: an image tag's tree names each distinct chunk of the
	// image once (schema.MaxImageChunks references at most).
	maxTreeEntries = 1<<17 + 1024
	maxTreeName    = 1024
	maxTreeBytes   = maxTreeEntries * 96
	// maxCommitBytes bounds a commit or an annotated tag: pullship's carry
	// a short message.
	maxCommitBytes = 1 << 20
	maxParents     = 64
)

// ErrBadObject reports a tree, commit or tag that does not decode, or that
// is beyond the bounds a store reads.
var ErrBadObject = errors.New("bad git object")

// CommitInfo is what a store reads of a commit: its id, tree and parents.
type CommitInfo struct {
	Hash         plumbing.Hash
	Tree         plumbing.Hash
	ParentHashes []plumbing.Hash
}

// decodeTree parses git's tree encoding: "<octal mode> <name>\x00<20-byte
// id>" per entry.
func decodeTree(data []byte) ([]TreeEntry, error) {
	var out []TreeEntry
	err := eachTreeEntry(data, func(name []byte, mode filemode.FileMode, id plumbing.Hash) {
		out = append(out, TreeEntry{Name: string(name), Mode: mode, ID: id})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachTreeEntry calls f with each entry of the tree data, checked as
// decodeTree checks it (name is only valid during the call).
func eachTreeEntry(data []byte, f func(name []byte, mode filemode.FileMode, id plumbing.Hash)) error {
	for n := 0; len(data) > 0; n++ {
		if n == maxTreeEntries {
			return fmt.Errorf("%w: tree of more than %d entries", ErrBadObject, maxTreeEntries)
		}
		sp := bytes.IndexByte(data[:min(len(data), 8)], ' ')
		if sp < 1 || sp > 7 {
			return fmt.Errorf("%w: tree entry %d: no mode", ErrBadObject, n)
		}
		var m uint64
		for _, c := range data[:sp] {
			if c < '0' || c > '7' {
				return fmt.Errorf("%w: tree entry %d: mode %q", ErrBadObject, n, data[:sp])
			}
			m = m<<3 | uint64(c-'0')
		}
		mode := filemode.FileMode(m)
		switch mode {
		case filemode.Regular, filemode.Executable, filemode.Symlink, filemode.Dir, filemode.Submodule, filemode.Deprecated:
		default:
			return fmt.Errorf("%w: tree entry %d: mode %o", ErrBadObject, n, m)
		}
		data = data[sp+1:]
		nul := bytes.IndexByte(data[:min(len(data), maxTreeName+1)], 0)
		if nul < 1 {
			return fmt.Errorf("%w: tree entry %d: name empty, unterminated or longer than %d bytes", ErrBadObject, n, maxTreeName)
		}
		name := data[:nul]
		data = data[nul+1:]
		if len(data) < 20 {
			return fmt.Errorf("%w: tree entry %q: id cut", ErrBadObject, name)
		}
		var id plumbing.Hash
		copy(id[:], data[:20])
		data = data[20:]
		f(name, mode, id)
	}
	return nil
}

// decodeCommit reads a commit's tree and parents: its header starts
// "tree <hex>\n", then "parent <hex>\n" lines.
func decodeCommit(id plumbing.Hash, data []byte) (CommitInfo, error) {
	c := CommitInfo{Hash: id}
	var ok bool
	if c.Tree, data, ok = headerID(data, "tree "); !ok {
		return CommitInfo{}, fmt.Errorf("%w: commit %s: no tree line", ErrBadObject, id)
	}
	for {
		p, rest, ok := headerID(data, "parent ")
		if !ok {
			break
		}
		if len(c.ParentHashes) == maxParents {
			return CommitInfo{}, fmt.Errorf("%w: commit %s: more than %d parents", ErrBadObject, id, maxParents)
		}
		c.ParentHashes = append(c.ParentHashes, p)
		data = rest
	}
	return c, nil
}

// decodeTagTarget reads the object an annotated tag points at.
func decodeTagTarget(id plumbing.Hash, data []byte) (plumbing.Hash, error) {
	t, _, ok := headerID(data, "object ")
	if !ok {
		return plumbing.ZeroHash, fmt.Errorf("%w: tag %s: no object line", ErrBadObject, id)
	}
	return t, nil
}

// headerID parses "<key><40 hex>\n" at the start of data (the newline may
// be missing at the end of data).
func headerID(data []byte, key string) (plumbing.Hash, []byte, bool) {
	n := len(key) + 40
	if len(data) < n || string(data[:len(key)]) != key || len(data) > n && data[n] != '\n' {
		return plumbing.ZeroHash, data, false
	}
	hex := string(data[len(key):n])
	if !plumbing.IsHash(hex) {
		return plumbing.ZeroHash, data, false
	}
	return plumbing.NewHash(hex), data[min(n+1, len(data)):], true
}

// readObject returns the content of object id of type t (AnyObject: any),
// at most max bytes (checked before reading), and its type.
func (s *Store) readObject(t plumbing.ObjectType, id plumbing.Hash, max int64) ([]byte, plumbing.ObjectType, error) {
	obj, err := s.object(t, id)
	if err != nil {
		return nil, 0, err
	}
	b, err := readContent(obj, max)
	return b, obj.Type(), err
}

// readContent reads obj whole into a buffer of its size, if that is at most
// max bytes.
func readContent(obj plumbing.EncodedObject, max int64) ([]byte, error) {
	if obj.Size() > max {
		return nil, fmt.Errorf("%w: %s %s of %d bytes, limit %d", ErrBadObject, obj.Type(), obj.Hash(), obj.Size(), max)
	}
	r, err := obj.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b := make([]byte, obj.Size())
	n, err := io.ReadFull(r, b)
	if err == nil {
		var one [1]byte
		if m, _ := r.Read(one[:]); m > 0 {
			n++
		}
	}
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, err
	}
	if int64(n) != obj.Size() {
		return nil, &SizeMismatchError{Declared: obj.Size(), Got: int64(n)}
	}
	return b, nil
}

func (s *Store) readCommit(id plumbing.Hash) (CommitInfo, error) {
	b, _, err := s.readObject(plumbing.CommitObject, id, maxCommitBytes)
	if err != nil {
		return CommitInfo{}, err
	}
	return decodeCommit(id, b)
}

func (s *Store) readTree(id plumbing.Hash) ([]TreeEntry, error) {
	b, _, err := s.readObject(plumbing.TreeObject, id, maxTreeBytes)
	if err != nil {
		return nil, err
	}
	return decodeTree(b)
}
