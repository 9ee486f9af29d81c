package repo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/pullship/pullship/bundler/shared/atomicfile"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// ErrNotRepository reports a directory that is not a bare git repository.
var ErrNotRepository = errors.New("not a bare git repository")

// ErrNotFound reports a missing object, ref or path.
var ErrNotFound = errors.New("not found")

// Store is a bare git repository on disk: the agent's local object store, a
// release repository in a directory (removable media, local use), or the
// target of a directory push. Objects are read through go-git's filesystem
// storage with a large-object threshold, so a big blob is streamed from its
// pack and never held whole; packs are written by pullship's own streaming
// writer together with their .idx, without the git CLI.
//
// Refs are updated with git's own lock protocol (<ref>.lock created
// exclusively, then renamed), so a Store is safe next to concurrent git
// processes (git daemon, git push to the same directory). Use a Store from
// one goroutine at a time.
type Store struct {
	dir  string
	mu   sync.Mutex
	sto  *filesystem.Storage // refs, and loose objects
	view *objectView

	budgetMu  sync.Mutex
	budget    int64        // bytes on disk (0: no bound); see SetBudget
	reserved  int64        // room set aside for packs being received
	receiving atomic.Int32 // packs being received
}

const (
	// Objects bigger than this stream from their pack; smaller ones go-git
	// reads whole (and caches). Chunk blobs (~0.5 MiB) are above it: held
	// whole, they made an image read from the store (a directory remote, the
	// mirror) take up to twice the memory and CPU (TestStoreOpenBlobStreams).
	largeObjectThreshold = 64 << 10
	objectCacheBytes     = 8 << 20
)

// Init creates a bare repository at dir (an existing one is kept as it is)
// and opens it.
func Init(dir string) (*Store, error) {
	for _, d := range []string{"objects/pack", "objects/info", "refs/heads", "refs/tags"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(d)), 0o755); err != nil {
			return nil, fmt.Errorf("init repository %s: %w", dir, err)
		}
	}
	files := map[string]string{
		"HEAD":   "ref: refs/heads/releases\n",
		"config": "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n",
	}
	for name, content := range files {
		err := atomicfile.WriteNew(filepath.Join(dir, name), []byte(content), 0o644)
		if err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("init repository %s: %w", dir, err)
		}
	}
	return OpenStore(dir)
}

// OpenStore opens the existing bare repository at dir.
func OpenStore(dir string) (*Store, error) {
	for _, p := range []string{"objects", "refs", "HEAD"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return nil, fmt.Errorf("open repository %s: %w (missing %s)", dir, ErrNotRepository, p)
		}
	}
	s := &Store{dir: dir}
	s.reload()
	return s, nil
}

// Dir is the repository directory.
func (s *Store) Dir() string { return s.dir }

// reload makes the store see the packs on disk now: indexes of packs it
// saw before are kept, new ones mapped.
func (s *Store) reload() {
	sto := filesystem.NewStorageWithOptions(newRegularFS(s.dir), newObjectLRU(objectCacheBytes),
		filesystem.Options{LargeObjectThreshold: largeObjectThreshold})
	s.mu.Lock()
	old := s.view
	s.mu.Unlock()
	v := newObjectView(s.dir, sto, old)
	s.mu.Lock()
	s.sto, s.view = sto, v
	s.mu.Unlock()
}

func (s *Store) storage() *filesystem.Storage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sto
}

func (s *Store) objects() *objectView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

// HasObject reports whether the object id is in the store.
func (s *Store) HasObject(id plumbing.Hash) bool {
	if s.objects().has(id) {
		return true
	}
	return s.rescan() && s.objects().has(id)
}

// object returns object id of type t (AnyObject: any type). A miss looks
// for packs written since the last reload (by git, or another Store on
// the same directory) before it is final, as git does.
func (s *Store) object(t plumbing.ObjectType, id plumbing.Hash) (plumbing.EncodedObject, error) {
	obj, err := s.objects().object(t, id)
	if errors.Is(err, plumbing.ErrObjectNotFound) && s.rescan() {
		obj, err = s.objects().object(t, id)
	}
	return obj, err
}

// rescan reloads the store when its pack directory lists other packs than
// it sees, and reports whether it did.
func (s *Store) rescan() bool {
	idxs, _ := filepath.Glob(filepath.Join(s.dir, "objects", "pack", "pack-*.idx"))
	v := s.objects()
	if len(idxs) == len(v.packs) {
		seen := map[string]bool{}
		for _, p := range v.packs {
			seen[filepath.Base(p.name)] = true
		}
		same := true
		for _, p := range idxs {
			if !seen[strings.TrimSuffix(filepath.Base(p), ".idx")] {
				same = false
				break
			}
		}
		if same {
			return false
		}
	}
	s.reload()
	return true
}

// Write stores every object of st as one new pack (pack and index written to
// temporary files, synced, then renamed into place: a crash leaves either no
// pack or a complete one). Content is checked against the declared ids.
func (s *Store) Write(ctx context.Context, st *ObjectStream) error {
	_, err := s.write(ctx, st)
	return err
}

func (s *Store) write(ctx context.Context, st *ObjectStream) (int64, error) {
	if st.Len() == 0 {
		return 0, nil
	}
	tmp, err := atomicfile.Create(filepath.Join(s.dir, "objects", "pack", "tmp_pack"), 0o444)
	if err != nil {
		return 0, fmt.Errorf("write pack to %s: %w", s.dir, err)
	}
	defer tmp.Abort()
	sum, entries, err := WritePack(ctx, tmp.File, st)
	var packSize int64
	if fi, serr := tmp.Stat(); serr == nil {
		packSize = fi.Size()
	}
	if err != nil {
		return 0, fmt.Errorf("write pack to %s: %w", s.dir, err)
	}
	idx := make([]idxEntry, len(entries))
	for i, e := range entries {
		idx[i] = idxEntry{id: e.ID, offset: int64(e.Offset), crc: e.CRC32}
	}
	return packSize, s.install(tmp, sum, idx)
}

// ReceivePack stores a pack read from r (as a server sends it: full, not
// thin) the same crash-safe way as Write: spooled to a temporary file while
// it is indexed in the same pass (every entry inflated once, its object id
// recomputed from its content), its deltas resolved within bounds, then
// renamed into place. The inflated sizes the entries declare may add up to
// at most inflateLimit bytes.
func (s *Store) ReceivePack(r io.Reader, inflateLimit int64) error {
	return s.receivePack(r, packLimits{inflate: inflateLimit, objects: defaultMaxObjects(inflateLimit)}, nil)
}

// receivePack is ReceivePack announcing each checked object to live.
func (s *Store) receivePack(r io.Reader, lim packLimits, live *LivePack) error {
	sp, err := s.spoolPack(r, lim, live)
	if err != nil {
		return err
	}
	return s.installSpooled(sp)
}

// spooledPack is a pack received and checked (spooled, indexed, its deltas
// resolved) but not yet in the store.
type spooledPack struct {
	tmp     *atomicfile.File
	sum     plumbing.Hash
	entries []idxEntry
	lim     packLimits
	live    *LivePack
	obs     liveObserver
	unmap   func() // releases entries' mapping
	res     *reservation
}

// spoolPack receives a pack from r into a temporary file of the store's
// pack directory. It reads nothing of the store: several packs may be
// spooled at once, each installed with installSpooled (which may not run
// concurrently with anything else using the store). An error removes the
// spool.
func (s *Store) spoolPack(r io.Reader, lim packLimits, live *LivePack) (*spooledPack, error) {
	res, err := s.reserve(lim.pack, lim.objects)
	if err != nil {
		return nil, fmt.Errorf("receive pack into %s: %w", s.dir, err)
	}
	tmp, err := atomicfile.Create(filepath.Join(s.dir, "objects", "pack", "tmp_pack"), 0o444)
	if err != nil {
		res.release()
		return nil, fmt.Errorf("receive pack into %s: %w", s.dir, err)
	}
	sp := &spooledPack{tmp: tmp, lim: lim, live: live, res: res}
	// The pack is read no further than the budget leaves.
	r = &limitedReader{r: r, left: res.packBytes(), what: "pack", err: res.tooLarge()}
	var obs packObserver
	if live != nil {
		if sp.obs, err = live.attach(tmp.Name()); err != nil {
			sp.abort()
			return nil, fmt.Errorf("receive pack into %s: %w", s.dir, err)
		}
		obs = sp.obs
	}
	// The entries live in a mapping until the pack is installed or
	// dropped (sp.abort).
	lim.table = func(count int) ([]idxEntry, error) {
		t, release, err := entryTable(filepath.Join(s.dir, "objects", "pack"), count)
		sp.unmap = release
		return t, err
	}
	spool := bufio.NewWriterSize(tmp.File, 256<<10)
	sp.sum, sp.entries, err = indexPack(r, spool, lim, obs)
	if err == nil {
		err = spool.Flush()
	}
	if err == nil {
		var fi os.FileInfo
		if fi, err = tmp.Stat(); err == nil {
			err = res.check(fi.Size(), len(sp.entries))
		}
	}
	if err == nil && slices.ContainsFunc(sp.entries, func(e idxEntry) bool { return e.delta }) {
		err = resolveDeltas(tmp.File, sp.entries, 2*lim.inflate)
	}
	if err == nil {
		// Synced here, where packs spooled at once do not wait for each
		// other: the install's sync then finds nothing left to write.
		err = tmp.SyncEarly()
	}
	if err != nil {
		sp.abort()
		return nil, fmt.Errorf("receive pack into %s: %w", s.dir, err)
	}
	return sp, nil
}

// abort drops a spooled pack that is not installed (after installSpooled,
// it only releases the entries' mapping).
func (sp *spooledPack) abort() {
	sp.tmp.Abort()
	sp.res.release()
	if sp.unmap != nil {
		sp.unmap()
		sp.unmap = nil
	}
	sp.entries = nil
}

// installSpooled puts a spooled pack in place: when it was fetched for
// wants, only if it completes them and holds nothing else.
func (s *Store) installSpooled(sp *spooledPack) error {
	defer sp.abort()
	base := filepath.Join(s.dir, "objects", "pack", "pack-"+sp.sum.String())
	if sp.lim.wants == nil {
		if err := s.install(sp.tmp, sp.sum, sp.entries); err != nil {
			return err
		}
	} else {
		before := s.objects()
		if err := s.install(sp.tmp, sp.sum, sp.entries); err != nil {
			return err
		}
		if err := s.checkWanted(before, sp.entries, sp.lim.wants, sp.lim.bottom); err != nil {
			os.Remove(base + ".idx")
			os.Remove(base + ".pack")
			s.reload()
			return fmt.Errorf("receive pack into %s: %w", s.dir, err)
		}
	}
	if sp.live != nil {
		sp.obs.installed(base + ".pack")
	}
	return nil
}

// entryTable returns room for count index entries in a file-backed
// mapping of a temporary file in dir (removed at once: the mapping keeps
// it): the entries of a pack of a million objects take 40 MiB of the page
// cache, which the kernel may write back, instead of the heap.
func entryTable(dir string, count int) ([]idxEntry, func(), error) {
	f, err := os.CreateTemp(dir, "tmp_entries_")
	if err != nil {
		return nil, nil, fmt.Errorf("index entries: %w", err)
	}
	defer f.Close()
	defer os.Remove(f.Name())
	size := count * int(unsafe.Sizeof(idxEntry{}))
	b, unmap, err := mapScratch(f, size)
	if err != nil {
		return nil, nil, fmt.Errorf("index entries: %w", err)
	}
	return unsafe.Slice((*idxEntry)(unsafe.Pointer(unsafe.SliceData(b))), count)[:0], unmap, nil
}

// checkWanted checks that the installed pack of entries (sorted by id) is
// what a fetch of wants asked for: the wants and everything below them are
// in the pack or were in the store before (before: the store's view then),
// and every object of the pack is reachable from the wants. Otherwise a
// junk pack would stay on disk. The walk stops at bottom (see
// packLimits.bottom).
func (s *Store) checkWanted(before *objectView, entries []idxEntry, wants, bottom []plumbing.Hash) error {
	inPack := func(id plumbing.Hash) bool {
		_, ok := slices.BinarySearchFunc(entries, id, func(e idxEntry, id plumbing.Hash) int { return bytes.Compare(e.id[:], id[:]) })
		return ok
	}
	reached := 0
	err := s.walkIDs(wants, func(id plumbing.Hash) bool {
		// Below what the store had, the store is complete.
		return !inPack(id) && before.has(id) || slices.Contains(bottom, id)
	}, func(o Object) {
		if inPack(o.ID) {
			reached++
		}
	})
	if err != nil {
		return fmt.Errorf("%w: the pack does not complete the wanted refs: %w", ErrBadPack, err)
	}
	if reached != len(entries) {
		return fmt.Errorf("%w: %d of the pack's %d objects are not reachable from the wanted refs", ErrBadPack, len(entries)-reached, len(entries))
	}
	return nil
}

// install writes the index of the pack written to tmpPack, then commits
// the pack and the index (in that order: git finds packs by their .idx)
// into place and makes the store see them.
func (s *Store) install(tmpPack *atomicfile.File, sum plumbing.Hash, entries []idxEntry) error {
	packDir := filepath.Join(s.dir, "objects", "pack")
	itmp, err := atomicfile.Create(filepath.Join(packDir, "tmp_idx"), 0o444)
	if err != nil {
		return fmt.Errorf("index pack %s: %w", sum, err)
	}
	defer itmp.Abort()
	err = writeIndex(itmp.File, entries, sum)
	if err != nil {
		return fmt.Errorf("index pack %s: %w", sum, err)
	}
	base := "pack-" + sum.String()
	if err := tmpPack.CommitAs(base + ".pack"); err != nil {
		return fmt.Errorf("install pack %s: %w", sum, err)
	}
	step("pack in place")
	if err := itmp.CommitAs(base + ".idx"); err != nil {
		return fmt.Errorf("install pack %s: %w", sum, err)
	}
	s.reload()
	return nil
}

// Ref returns the value of the ref name (loose or packed); ErrNotFound when
// it does not exist.
func (s *Store) Ref(name string) (plumbing.Hash, error) {
	h, err := s.readRef(name)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if h.IsZero() {
		return plumbing.ZeroHash, fmt.Errorf("ref %s: %w", name, ErrNotFound)
	}
	return h, nil
}

// Refs returns every ref of the store (loose refs win over packed ones) and
// HEAD when it resolves.
func (s *Store) Refs() (map[string]plumbing.Hash, error) {
	iter, err := s.storage().IterReferences()
	if err != nil {
		return nil, fmt.Errorf("list refs of %s: %w", s.dir, err)
	}
	refs := make(map[string]plumbing.Hash)
	err = iter.ForEach(func(r *plumbing.Reference) error {
		if r.Type() == plumbing.HashReference {
			refs[r.Name().String()] = r.Hash()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list refs of %s: %w", s.dir, err)
	}
	if head, err := s.storage().Reference(plumbing.HEAD); err == nil && head.Type() == plumbing.SymbolicReference {
		if h, ok := refs[head.Target().String()]; ok {
			refs["HEAD"] = h
		}
	}
	return refs, nil
}

// readRef returns the ref's value, zero when it does not exist.
func (s *Store) readRef(name string) (plumbing.Hash, error) {
	if err := checkRefName(name); err != nil {
		return plumbing.ZeroHash, err
	}
	b, err := readRegular(filepath.Join(s.dir, filepath.FromSlash(name)), maxLooseRef)
	switch {
	case err == nil:
		h, err := parseLooseRef(b)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("ref %s: %w", name, err)
		}
		return h, nil
	case !errors.Is(err, os.ErrNotExist):
		return plumbing.ZeroHash, fmt.Errorf("read ref %s: %w", name, err)
	}
	packed, err := readRegular(filepath.Join(s.dir, "packed-refs"), maxPackedRefs)
	if errors.Is(err, os.ErrNotExist) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("read ref %s: %w", name, err)
	}
	return parsePackedRef(packed, name), nil
}

// parseLooseRef parses a loose ref file: one object id and a newline.
// Symbolic refs are not followed (pullship's refs are plain).
func parseLooseRef(b []byte) (plumbing.Hash, error) {
	line := strings.TrimSpace(string(b))
	if len(line) != 40 || !plumbing.IsHash(line) {
		return plumbing.ZeroHash, fmt.Errorf("not a plain object id (%.60q)", line)
	}
	return plumbing.NewHash(line), nil
}

// parsePackedRef finds name in packed-refs content; zero when absent.
func parsePackedRef(packed []byte, name string) plumbing.Hash {
	for _, line := range strings.Split(string(packed), "\n") {
		if len(line) > 41 && line[40] == ' ' && line[41:] == name && plumbing.IsHash(line[:40]) {
			return plumbing.NewHash(line[:40])
		}
	}
	return plumbing.ZeroHash
}

// checkRefName applies git's check-ref-format rules (and requires "refs/").
func checkRefName(name string) error {
	bad := !strings.HasPrefix(name, "refs/") || strings.HasSuffix(name, "/") ||
		strings.HasSuffix(name, ".") || strings.Contains(name, "..") ||
		strings.Contains(name, "//") || strings.Contains(name, "@{") ||
		strings.ContainsAny(name, " ~^:?*[\\\x7f")
	for _, el := range strings.Split(name, "/") {
		if strings.HasPrefix(el, ".") || strings.HasSuffix(el, ".lock") {
			bad = true
		}
	}
	for _, c := range name {
		if c < 0x20 {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("%w: ref name %q", ErrBadName, name)
	}
	return nil
}

// SetRef moves ref name from old to new atomically (compare-and-swap): old
// zero means "must not exist", new zero deletes the ref. A different current
// value is a *RefConflictError. new must already be in the store.
func (s *Store) SetRef(name string, old, new plumbing.Hash) error {
	return s.setRef(name, &old, new)
}

// setRef with old == nil updates unconditionally.
func (s *Store) setRef(name string, old *plumbing.Hash, new plumbing.Hash) (err error) {
	if err := checkRefName(name); err != nil {
		return err
	}
	if !new.IsZero() && !s.HasObject(new) {
		return fmt.Errorf("update ref %s to %s: object %w", name, new, ErrNotFound)
	}
	path := filepath.Join(s.dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("update ref %s: %w", name, err)
	}
	lock, err := atomicfile.Lock(path, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("update ref %s: locked by another writer (%s.lock exists; remove it if no git process is running)", name, path)
	}
	if err != nil {
		return fmt.Errorf("update ref %s: %w", name, err)
	}
	defer lock.Abort()
	cur, err := s.readRef(name)
	if err != nil {
		return err
	}
	if old != nil && cur != *old {
		return &RefConflictError{Ref: name, Expected: *old, Actual: cur}
	}
	if new.IsZero() {
		if err := atomicfile.Remove(path); err != nil {
			return fmt.Errorf("delete ref %s: %w", name, err)
		}
		return s.deletePacked(name)
	}
	if _, err := fmt.Fprintf(lock, "%s\n", new); err != nil {
		return fmt.Errorf("update ref %s: %w", name, err)
	}
	if err := lock.Commit(); err != nil {
		return fmt.Errorf("update ref %s: %w", name, err)
	}
	return nil
}

// deletePacked removes name from packed-refs under git's packed-refs.lock.
func (s *Store) deletePacked(name string) error {
	path := filepath.Join(s.dir, "packed-refs")
	data, err := readRegular(path, maxPackedRefs)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete ref %s: %w", name, err)
	}
	var out bytes.Buffer
	lines := strings.SplitAfter(string(data), "\n")
	found := false
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSuffix(lines[i], "\n")
		if len(l) > 41 && l[41:] == name {
			found = true
			if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "^") {
				i++ // its peeled value
			}
			continue
		}
		out.WriteString(lines[i])
	}
	if !found {
		return nil
	}
	lock, err := atomicfile.Lock(path, 0o644)
	if err != nil {
		return fmt.Errorf("delete ref %s: lock packed-refs: %w", name, err)
	}
	defer lock.Abort()
	_, err = lock.Write(out.Bytes())
	if err == nil {
		err = lock.Commit()
	}
	if err != nil {
		return fmt.Errorf("delete ref %s: rewrite packed-refs: %w", name, err)
	}
	return nil
}

// ReadFile returns the content of the blob at path (slash-separated) in the
// tree of commit. A blob larger than maxSize is an error before any byte is
// read: the repository is attacker input.
func (s *Store) ReadFile(commit plumbing.Hash, path string, maxSize int64) ([]byte, error) {
	e, err := s.lookup(commit, path)
	if err != nil {
		return nil, err
	}
	if e.Mode != filemode.Regular && e.Mode != filemode.Executable {
		return nil, fmt.Errorf("read %s at %s: not a regular file (mode %o)", path, commit, uint32(e.Mode))
	}
	obj, err := s.object(plumbing.BlobObject, e.ID)
	if err != nil {
		return nil, fmt.Errorf("read %s at %s: blob %s: %w", path, commit, e.ID, err)
	}
	if obj.Size() > maxSize {
		return nil, fmt.Errorf("read %s at %s: %d bytes exceeds the limit of %d", path, commit, obj.Size(), maxSize)
	}
	r, err := obj.Reader()
	if err != nil {
		return nil, fmt.Errorf("read %s at %s: %w", path, commit, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s at %s: %w", path, commit, err)
	}
	if int64(len(b)) != obj.Size() {
		return nil, fmt.Errorf("read %s at %s: %w", path, commit, &SizeMismatchError{Declared: obj.Size(), Got: int64(len(b))})
	}
	return b, nil
}

// commitTree returns the id of commit's root tree.
func (s *Store) commitTree(commit plumbing.Hash) (plumbing.Hash, error) {
	e, err := s.lookup(commit, "")
	return e.ID, err
}

// lookup resolves path in commit's tree to its entry.
func (s *Store) lookup(commit plumbing.Hash, path string) (TreeEntry, error) {
	c, err := s.readCommit(commit)
	if err != nil {
		return TreeEntry{}, fmt.Errorf("commit %s: %w", commit, err)
	}
	e := TreeEntry{Mode: filemode.Dir, ID: c.Tree}
	if path == "" {
		return e, nil
	}
	for _, el := range strings.Split(path, "/") {
		if e.Mode != filemode.Dir {
			return TreeEntry{}, fmt.Errorf("%s at %s: %w (%s is not a directory)", path, commit, ErrNotFound, e.Name)
		}
		t, err := s.readTree(e.ID)
		if err != nil {
			return TreeEntry{}, fmt.Errorf("%s at %s: tree %s: %w", path, commit, e.ID, err)
		}
		found := false
		for _, te := range t {
			if te.Name == el {
				e = te
				found = true
				break
			}
		}
		if !found {
			return TreeEntry{}, fmt.Errorf("%s at %s: %w", path, commit, ErrNotFound)
		}
	}
	return e, nil
}

// ListTree returns the entries of directory dir ("" for the root) in commit.
func (s *Store) ListTree(commit plumbing.Hash, dir string) ([]TreeEntry, error) {
	e, err := s.lookup(commit, strings.Trim(dir, "/"))
	if err != nil {
		return nil, fmt.Errorf("list tree: %w", err)
	}
	if e.Mode != filemode.Dir {
		return nil, fmt.Errorf("list tree %s at %s: not a directory", dir, commit)
	}
	t, err := s.readTree(e.ID)
	if err != nil {
		return nil, fmt.Errorf("list tree %s at %s: %w", dir, commit, err)
	}
	return t, nil
}

// BlobSize returns the size of blob id without reading it.
func (s *Store) BlobSize(id plumbing.Hash) (int64, error) {
	obj, err := s.object(plumbing.BlobObject, id)
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", id, err)
	}
	return obj.Size(), nil
}

// OpenBlob streams blob id, which must be exactly size bytes (the size a
// signed manifest declares): a different stored size fails before reading,
// and the reader fails rather than return more or fewer bytes.
func (s *Store) OpenBlob(id plumbing.Hash, size int64) (io.ReadCloser, error) {
	obj, err := s.object(plumbing.BlobObject, id)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", id, err)
	}
	if obj.Size() != size {
		return nil, fmt.Errorf("open blob %s: %w", id, &SizeMismatchError{Declared: size, Got: min(obj.Size(), size+1)})
	}
	r, err := obj.Reader()
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", id, err)
	}
	return &exactReader{r: r, left: size, id: id, size: size}, nil
}

// exactReader yields exactly size bytes and errors on a short or long source.
type exactReader struct {
	r    io.ReadCloser
	left int64
	size int64
	id   plumbing.Hash
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		var one [1]byte
		if n, _ := io.ReadFull(e.r, one[:]); n > 0 {
			return 0, fmt.Errorf("blob %s: %w", e.id, &SizeMismatchError{Declared: e.size, Got: e.size + 1})
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, fmt.Errorf("blob %s: %w", e.id, &SizeMismatchError{Declared: e.size, Got: e.size - e.left})
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}

func (e *exactReader) Close() error { return e.r.Close() }

// Log walks first parents from commit, newest first, returning at most limit
// commits (limit <= 0: all). pullship's branches are linear.
func (s *Store) Log(commit plumbing.Hash, limit int) ([]CommitInfo, error) {
	var out []CommitInfo
	for h := commit; !h.IsZero() && (limit <= 0 || len(out) < limit); {
		c, err := s.readCommit(h)
		if err != nil {
			return out, fmt.Errorf("log: commit %s: %w", h, err)
		}
		out = append(out, c)
		h = plumbing.ZeroHash
		if len(c.ParentHashes) > 0 {
			h = c.ParentHashes[0]
		}
	}
	return out, nil
}

// Missing returns the objects reachable from wants that are not reachable
// from any of haves, as a stream reading from this store: what a push of
// locally written commits (status branches) must send. It assumes the store
// is complete below every have.
func (s *Store) Missing(wants, haves []plumbing.Hash) (*ObjectStream, error) {
	skip := make(map[plumbing.Hash]bool)
	for _, h := range haves {
		if h.IsZero() || !s.HasObject(h) {
			continue
		}
		if err := s.walk([]plumbing.Hash{h}, func(id plumbing.Hash) bool { return skip[id] }, func(o Object) { skip[o.ID] = true }); err != nil {
			return nil, err
		}
	}
	st := NewObjectStream(s.openObject)
	st.serial = true
	err := s.walk(wants, func(id plumbing.Hash) bool { return skip[id] }, func(o Object) { st.Add(o) })
	return st, err
}

// openObject is the OpenFunc of streams that read from the store.
func (s *Store) openObject(o Object) (io.ReadCloser, error) {
	obj, err := s.object(o.Type, o.ID)
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", o.ID, err)
	}
	return obj.Reader()
}

// walk visits every object reachable from roots (commits, their trees and
// blobs, parents; annotated tags and their targets), skipping any object for
// which stop returns true together with everything below it. Its memory is
// a bit per object of the store (the objects seen) and 8 bytes per object
// waiting to be visited (each object waits at most once).
func (s *Store) walk(roots []plumbing.Hash, stop func(plumbing.Hash) bool, visit func(Object)) error {
	return s.walkObjects(roots, stop, visit, true)
}

// walkIDs is walk for callers that need ids only: a blob named by a tree
// is visited (Type blob, Size -1) when the store has it, without being
// read; a wanted check or a prune of a store of a million blobs reads its
// trees, not its blobs.
func (s *Store) walkIDs(roots []plumbing.Hash, stop func(plumbing.Hash) bool, visit func(Object)) error {
	return s.walkObjects(roots, stop, visit, false)
}

func (s *Store) walkObjects(roots []plumbing.Hash, stop func(plumbing.Hash) bool, visit func(Object), sizes bool) error {
	s.rescan()
	v := s.objects()
	seen := newObjectSet(v)
	// A packed object waits as pack<<32 | position; another (loose, or
	// missing) as 1<<63 | its index in others.
	var stack []uint64
	var others []plumbing.Hash
	var blobs []plumbing.Hash // a tree's blobs, when they are not read
	push := func(id plumbing.Hash) {
		if !seen.add(id) || stop(id) {
			return
		}
		if i, pos := v.locate(id); i >= 0 {
			stack = append(stack, uint64(i)<<32|uint64(pos))
			return
		}
		stack = append(stack, 1<<63|uint64(len(others)))
		others = append(others, id)
	}
	for _, id := range roots {
		push(id)
	}
	for len(stack) > 0 {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		var id plumbing.Hash
		if top&(1<<63) != 0 {
			id = others[top&^(1<<63)]
		} else {
			copy(id[:], v.packs[top>>32].idx.name(int(top&(1<<32-1))))
		}
		obj, err := v.object(plumbing.AnyObject, id)
		if err != nil {
			return fmt.Errorf("walk object %s: %w", id, err)
		}
		visit(Object{ID: id, Type: obj.Type(), Size: obj.Size()})
		switch obj.Type() {
		case plumbing.CommitObject:
			b, err := readContent(obj, maxCommitBytes)
			var c CommitInfo
			if err == nil {
				c, err = decodeCommit(id, b)
			}
			if err != nil {
				return fmt.Errorf("walk commit %s: %w", id, err)
			}
			push(c.Tree)
			for _, p := range c.ParentHashes {
				push(p)
			}
		case plumbing.TreeObject:
			b, err := readContent(obj, maxTreeBytes)
			if err == nil {
				err = eachTreeEntry(b, func(_ []byte, mode filemode.FileMode, id plumbing.Hash) {
					switch {
					case mode == filemode.Submodule:
					case !sizes && mode != filemode.Dir:
						blobs = append(blobs, id)
					default:
						push(id)
					}
				})
			}
			for _, b := range blobs {
				if seen.add(b) && !stop(b) {
					if !v.has(b) {
						return fmt.Errorf("walk object %s: %w", b, plumbing.ErrObjectNotFound)
					}
					visit(Object{ID: b, Type: plumbing.BlobObject, Size: -1})
				}
			}
			blobs = blobs[:0]
			if err != nil {
				return fmt.Errorf("walk tree %s: %w", id, err)
			}
		case plumbing.TagObject:
			b, err := readContent(obj, maxCommitBytes)
			if err == nil {
				var target plumbing.Hash
				if target, err = decodeTagTarget(id, b); err == nil {
					push(target)
				}
			}
			if err != nil {
				return fmt.Errorf("walk tag %s: %w", id, err)
			}
		}
	}
	return nil
}

// Prune removes the packs of the store none of whose objects is reachable
// from keep (the commits the caller still needs: its refs), and returns
// the bytes freed. It costs a walk of every commit and tree below keep
// (blobs are not read) and one read of each pack's index; packs that hold
// any reachable object stay whole.
func (s *Store) Prune(keep []plumbing.Hash) (int64, error) {
	v, live, err := s.liveSet(keep)
	if err != nil {
		return 0, fmt.Errorf("prune %s: %w", s.dir, err)
	}
	return s.prunePacks(v, live)
}

// prunePacks removes the packs of v none of whose objects is in live.
func (s *Store) prunePacks(v *objectView, live *objectSet) (int64, error) {
	var freed int64
	pruned := false
	for i, p := range v.packs {
		if live.usesPack(i) {
			continue
		}
		pruned = true
		p.close()
		base := filepath.Join(s.dir, filepath.FromSlash(p.name))
		for _, f := range []string{base + ".idx", base + ".pack"} { // the index first: readers find packs by it
			if fi, err := os.Stat(f); err == nil {
				freed += fi.Size()
			}
			if err := os.Remove(f); err != nil {
				return freed, fmt.Errorf("prune %s: %w", s.dir, err)
			}
		}
	}
	if !pruned {
		return 0, nil
	}
	if err := atomicfile.SyncDir(filepath.Join(s.dir, "objects", "pack")); err != nil {
		return freed, fmt.Errorf("prune %s: %w", s.dir, err)
	}
	s.reload()
	return freed, nil
}
