package repo

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// Object describes one git object to send: its id, type and exact content
// size. All three are known before any byte is written (pullship chunks in
// two passes), which is what lets [PackWriter] emit the pack header and each
// entry header without buffering the content.
type Object struct {
	ID   plumbing.Hash
	Type plumbing.ObjectType
	Size int64
	// Precompressed: the content is compressed already (a zstd chunk
	// blob); the pack stores it in zlib's stored blocks, which cost a copy
	// to write and to read, instead of deflating it again for nothing.
	Precompressed bool
}

// OpenFunc returns the content of o: exactly o.Size bytes whose git object id
// is o.ID. The pack writer checks both and fails the pack otherwise. It may
// be called from several goroutines at once (objects are compressed in
// parallel).
type OpenFunc func(o Object) (io.ReadCloser, error)

// ObjectStream is the set of objects one pack carries, in pack order, without
// duplicates. Small objects (trees, commits, small files) are held in memory;
// large ones (chunks) are added by description and read through the OpenFunc
// only while they are being written.
type ObjectStream struct {
	open    OpenFunc
	objects []Object
	seen    map[plumbing.Hash]bool
	mem     map[plumbing.Hash][]byte
	serial  bool // open is not safe for concurrent use
}

// NewObjectStream returns an empty stream whose externally stored objects are
// read through open (nil when every object is added with AddBytes).
func NewObjectStream(open OpenFunc) *ObjectStream {
	return &ObjectStream{
		open: open,
		seen: make(map[plumbing.Hash]bool),
		mem:  make(map[plumbing.Hash][]byte),
	}
}

// Add appends an object whose content the OpenFunc supplies. Adding an id a
// second time is a no-op (content addressing dedups chunks), and it reports
// whether the object was new.
func (s *ObjectStream) Add(o Object) bool {
	if s.seen[o.ID] {
		return false
	}
	s.seen[o.ID] = true
	s.objects = append(s.objects, o)
	return true
}

// MarkPrecompressed flags the stream's objects whose ids are in ids as
// Precompressed (their content, chunk blobs, is compressed already).
func (s *ObjectStream) MarkPrecompressed(ids map[plumbing.Hash]bool) {
	for i := range s.objects {
		if ids[s.objects[i].ID] {
			s.objects[i].Precompressed = true
		}
	}
}

// AddBytes appends a small object held in memory and returns its id.
func (s *ObjectStream) AddBytes(t plumbing.ObjectType, data []byte) plumbing.Hash {
	id := HashObject(t, data)
	if s.Add(Object{ID: id, Type: t, Size: int64(len(data))}) {
		s.mem[id] = data
	}
	return id
}

// Len is the number of objects in the stream.
func (s *ObjectStream) Len() int { return len(s.objects) }

// Objects returns the objects in pack order. The slice must not be modified.
func (s *ObjectStream) Objects() []Object { return s.objects }

// Open returns the content of o, from memory or from the OpenFunc.
func (s *ObjectStream) Open(o Object) (io.ReadCloser, error) {
	if b, ok := s.mem[o.ID]; ok {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	if s.open == nil {
		return nil, fmt.Errorf("object %s: no content source", o.ID)
	}
	return s.open(o)
}

// HashObject returns the git object id of data as an object of type t.
func HashObject(t plumbing.ObjectType, data []byte) plumbing.Hash {
	h := sha1.New()
	writeObjectHeader(h, t, int64(len(data)))
	h.Write(data)
	var id plumbing.Hash
	copy(id[:], h.Sum(nil))
	return id
}

// BlobID streams r (which must hold exactly size bytes) and returns its git
// blob id.
func BlobID(r io.Reader, size int64) (plumbing.Hash, error) {
	h := sha1.New()
	writeObjectHeader(h, plumbing.BlobObject, size)
	n, err := io.Copy(h, io.LimitReader(r, size+1))
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("hash blob: %w", err)
	}
	if n != size {
		return plumbing.ZeroHash, fmt.Errorf("hash blob: read %d bytes, declared %d", n, size)
	}
	var id plumbing.Hash
	copy(id[:], h.Sum(nil))
	return id, nil
}

func writeObjectHeader(w io.Writer, t plumbing.ObjectType, size int64) {
	io.WriteString(w, t.String())
	io.WriteString(w, " ")
	io.WriteString(w, strconv.FormatInt(size, 10))
	w.Write([]byte{0})
}

// TreeEntry is one entry of a git tree. Mode is one of filemode.Regular,
// Executable, Symlink, Dir or Submodule.
type TreeEntry struct {
	Name string
	Mode filemode.FileMode
	ID   plumbing.Hash
}

// ErrBadName reports a tree entry or path that git (or pullship) must not store.
var ErrBadName = errors.New("bad path name")

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.EqualFold(name, ".git") ||
		strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	return nil
}

// EncodeTree returns the canonical git encoding of a tree holding entries
// (sorted git's way: a directory sorts as if its name ended in "/") and its
// id. Duplicate or unsafe names are an error.
func EncodeTree(entries []TreeEntry) ([]byte, plumbing.Hash, error) {
	es := append([]TreeEntry(nil), entries...)
	key := func(e TreeEntry) string {
		if e.Mode == filemode.Dir {
			return e.Name + "/"
		}
		return e.Name
	}
	sort.Slice(es, func(i, j int) bool { return key(es[i]) < key(es[j]) })
	var buf bytes.Buffer
	seen := make(map[string]bool, len(es))
	for _, e := range es {
		if err := checkName(e.Name); err != nil {
			return nil, plumbing.ZeroHash, fmt.Errorf("encode tree: %w", err)
		}
		if seen[e.Name] {
			return nil, plumbing.ZeroHash, fmt.Errorf("encode tree: duplicate entry %q", e.Name)
		}
		seen[e.Name] = true
		switch e.Mode {
		case filemode.Regular, filemode.Executable, filemode.Symlink, filemode.Dir, filemode.Submodule:
		default:
			return nil, plumbing.ZeroHash, fmt.Errorf("encode tree: entry %q: unsupported mode %o", e.Name, uint32(e.Mode))
		}
		buf.WriteString(strconv.FormatUint(uint64(e.Mode), 8))
		buf.WriteByte(' ')
		buf.WriteString(e.Name)
		buf.WriteByte(0)
		buf.Write(e.ID[:])
	}
	b := buf.Bytes()
	return b, HashObject(plumbing.TreeObject, b), nil
}

// Signature is a commit's author or committer.
type Signature struct {
	Name  string
	Email string
	When  time.Time
}

func (s Signature) encode(role string) (string, error) {
	if strings.ContainsAny(s.Name, "<>\n\x00") || strings.ContainsAny(s.Email, "<>\n\x00") {
		return "", fmt.Errorf("%s %q <%s>: name or email holds <, >, newline or NUL", role, s.Name, s.Email)
	}
	return fmt.Sprintf("%s %s <%s> %d %s\n", role, s.Name, s.Email, s.When.Unix(), s.When.Format("-0700")), nil
}

// Commit is the content of a git commit object.
type Commit struct {
	Tree      plumbing.Hash
	Parents   []plumbing.Hash
	Author    Signature
	Committer Signature
	Message   string
}

// EncodeCommit returns the canonical git encoding of c and its id.
func EncodeCommit(c Commit) ([]byte, plumbing.Hash, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "tree %s\n", c.Tree)
	for _, p := range c.Parents {
		fmt.Fprintf(&b, "parent %s\n", p)
	}
	for _, s := range []struct {
		role string
		sig  Signature
	}{{"author", c.Author}, {"committer", c.Committer}} {
		line, err := s.sig.encode(s.role)
		if err != nil {
			return nil, plumbing.ZeroHash, fmt.Errorf("encode commit: %w", err)
		}
		b.WriteString(line)
	}
	b.WriteString("\n")
	b.WriteString(c.Message)
	data := []byte(b.String())
	return data, HashObject(plumbing.CommitObject, data), nil
}

// TreeBuilder assembles a nested tree from slash-separated paths.
type TreeBuilder struct {
	files map[string]TreeEntry // full path → entry (Name = last element)
}

// NewTreeBuilder returns an empty builder.
func NewTreeBuilder() *TreeBuilder { return &TreeBuilder{files: make(map[string]TreeEntry)} }

// Add records a file (or symlink/submodule) at path, e.g. "nodes/a/vernemq.conf".
// Every path element must be a safe name.
func (b *TreeBuilder) Add(path string, mode filemode.FileMode, id plumbing.Hash) error {
	if mode == filemode.Dir {
		return fmt.Errorf("tree path %q: add files, directories are implied", path)
	}
	for _, el := range strings.Split(path, "/") {
		if err := checkName(el); err != nil {
			return fmt.Errorf("tree path %q: %w", path, err)
		}
	}
	if _, dup := b.files[path]; dup {
		return fmt.Errorf("tree path %q: added twice", path)
	}
	b.files[path] = TreeEntry{Name: path[strings.LastIndexByte(path, '/')+1:], Mode: mode, ID: id}
	return nil
}

// Build encodes every tree, adds them to s (subtrees first) and returns the
// root tree id. A path that is both a file and a directory is an error.
func (b *TreeBuilder) Build(s *ObjectStream) (plumbing.Hash, error) {
	type dir struct {
		entries []TreeEntry
		subdirs map[string]*dir
	}
	root := &dir{subdirs: map[string]*dir{}}
	for p, e := range b.files {
		d := root
		parts := strings.Split(p, "/")
		for _, el := range parts[:len(parts)-1] {
			sub, ok := d.subdirs[el]
			if !ok {
				sub = &dir{subdirs: map[string]*dir{}}
				d.subdirs[el] = sub
			}
			d = sub
		}
		d.entries = append(d.entries, e)
	}
	var build func(d *dir) (plumbing.Hash, error)
	build = func(d *dir) (plumbing.Hash, error) {
		entries := d.entries
		for name, sub := range d.subdirs {
			id, err := build(sub)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			entries = append(entries, TreeEntry{Name: name, Mode: filemode.Dir, ID: id})
		}
		data, id, err := EncodeTree(entries)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		s.AddBytes(plumbing.TreeObject, data)
		return id, nil
	}
	return build(root)
}
