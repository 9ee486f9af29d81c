package repo

import (
	"container/list"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// objectView is the store's objects as they were at one reload: its packs,
// each looked up through its mapped index (packIndex), then its loose
// objects. Objects are read by go-git's pack reader (big ones streamed from
// the pack), but never through go-git's own index, whose memory grows with
// the object count.
type objectView struct {
	dir   string
	fs    billy.Filesystem
	packs []*storedPack
	loose *filesystem.Storage // loose objects only: never asked for a packed one
}

// storedPack is a pack of the store and its index, and the pack kept open
// for reading (go-git's reader buffers 64 KiB: opening the pack for each
// object would allocate that per object).
type storedPack struct {
	name  string // "objects/pack/pack-<sum>", without extension
	mtime time.Time
	idx   *packIndex
	mu    sync.Mutex
	pf    *packfile.Packfile // nil until the first read
	f     billy.File
	c     cache.Object
	gets  int // reads through pf
	hdr   [64]byte
}

// packReads is how many objects one go-git pack reader reads before it is
// made anew: it remembers the type of every object it read (a map of
// offsets, 30 bytes an object), so a walk of a million objects kept 40 MiB.
const packReads = 4096

// get reads object id from the pack.
func (p *storedPack) get(v *objectView, id plumbing.Hash) (plumbing.EncodedObject, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		f, err := v.fs.Open(p.name + ".pack")
		if err != nil {
			return nil, err
		}
		p.f = f
		// Big enough for the bases of a delta chain, bounded (go-git's
		// default is 96 MiB).
		p.c = newObjectLRU(objectCacheBytes / 2)
		runtime.AddCleanup(p, func(f billy.File) { f.Close() }, f)
	}
	if err := p.checkChain(id); err != nil {
		return nil, err
	}
	if p.pf == nil || p.gets == packReads {
		p.pf = packfile.NewPackfileWithCache(p.idx, v.fs, p.f, p.c, largeObjectThreshold)
		p.gets = 0
	}
	p.gets++
	return p.pf.Get(id)
}

// checkChain refuses object id when it is a delta whose chain is deeper
// than the resolver accepts (maxDeltaDepth) or loops: go-git's reader
// follows a chain by recursion, holding each level's object, and a store
// on a removable disk was not received by pullship (a chain 100,000 deep
// took it to 243 MB of memory). It reads one entry header per level.
func (p *storedPack) checkChain(id plumbing.Hash) error {
	off, err := p.idx.FindOffset(id)
	if err != nil {
		return err
	}
	for depth := 0; ; depth++ {
		h, err := readEntryHeaderBuf(p.f, off, &p.hdr)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrBadPack, p.name, err)
		}
		switch h.typ {
		case packTypeOfsDelta:
			if h.baseOffset < 12 || h.baseOffset >= off {
				return fmt.Errorf("%w: %s: delta at offset %d: base offset %d is no earlier entry", ErrBadPack, p.name, off, h.baseOffset)
			}
			off = h.baseOffset
		case packTypeRefDelta:
			if off, err = p.idx.FindOffset(h.baseID); err != nil {
				return fmt.Errorf("%w: %s: delta base %s: %w", ErrBadPack, p.name, h.baseID, err)
			}
		default:
			return nil
		}
		if depth == maxDeltaDepth {
			return fmt.Errorf("%w: %s: object %s: delta chain deeper than %d", ErrDeltaLimit, p.name, id, maxDeltaDepth)
		}
	}
}

// close closes the pack (Prune, before removing it).
func (p *storedPack) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		p.f.Close()
		p.f, p.pf = nil, nil
	}
}

// newObjectView lists the packs of the repository at dir, keeping the
// indexes old has mapped already. A pack whose index cannot be read (a
// removable disk's) is left out: its objects are not found.
func newObjectView(dir string, loose *filesystem.Storage, old *objectView) *objectView {
	v := &objectView{dir: dir, fs: newRegularFS(dir), loose: loose}
	known := map[string]*storedPack{}
	if old != nil {
		for _, p := range old.packs {
			known[p.name] = p
		}
	}
	idxs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.idx"))
	for _, path := range idxs {
		name := "objects/pack/" + strings.TrimSuffix(filepath.Base(path), ".idx")
		if p, ok := known[name]; ok {
			v.packs = append(v.packs, p)
			continue
		}
		// Regular files only: a FIFO or a device on a removable disk
		// would block or never end a read.
		fi, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(name)+".pack"))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if ifi, err := os.Lstat(path); err != nil || !ifi.Mode().IsRegular() {
			continue
		}
		x, err := openPackIndex(path, fi.Size())
		if err != nil {
			continue
		}
		v.packs = append(v.packs, &storedPack{name: name, mtime: fi.ModTime(), idx: x})
	}
	// The newest first, as git looks them up: an object in several packs
	// (a repack interrupted before the old packs went) is found in, and
	// kept by a collection in, the newest, and the old packs go whole.
	slices.SortStableFunc(v.packs, func(a, b *storedPack) int { return b.mtime.Compare(a.mtime) })
	return v
}

// locate returns the pack holding id and its position there.
func (v *objectView) locate(id plumbing.Hash) (int, int) {
	for i, p := range v.packs {
		if pos := p.idx.find(id); pos >= 0 {
			return i, pos
		}
	}
	return -1, -1
}

func (v *objectView) loosePath(id plumbing.Hash) string {
	h := id.String()
	return filepath.Join(v.dir, "objects", h[:2], h[2:])
}

func (v *objectView) has(id plumbing.Hash) bool {
	if i, _ := v.locate(id); i >= 0 {
		return true
	}
	return v.hasLoose(id)
}

// hasLoose reports whether id is a loose object: a regular file (not a
// link, a FIFO or a device, which a removable disk may hold).
func (v *objectView) hasLoose(id plumbing.Hash) bool {
	fi, err := os.Lstat(v.loosePath(id))
	return err == nil && fi.Mode().IsRegular()
}

// object returns object id of type t (AnyObject: any type).
func (v *objectView) object(t plumbing.ObjectType, id plumbing.Hash) (plumbing.EncodedObject, error) {
	i, _ := v.locate(id)
	if i < 0 {
		if !v.hasLoose(id) {
			return nil, plumbing.ErrObjectNotFound
		}
		return v.loose.EncodedObject(t, id)
	}
	obj, err := v.packs[i].get(v, id)
	if err != nil {
		return nil, err
	}
	if t != plumbing.AnyObject && obj.Type() != t {
		return nil, plumbing.ErrObjectNotFound
	}
	return obj, nil
}

// objectSet is a set of objects of a view: a bit per object of each pack
// (an eighth of a byte an object), a map for the others (loose objects,
// missing ones).
type objectSet struct {
	v     *objectView
	bits  [][]uint64
	other map[plumbing.Hash]bool
}

func newObjectSet(v *objectView) *objectSet {
	return &objectSet{v: v, bits: make([][]uint64, len(v.packs)), other: map[plumbing.Hash]bool{}}
}

// add adds id and reports whether it was not in the set.
func (s *objectSet) add(id plumbing.Hash) bool {
	i, pos := s.v.locate(id)
	if i < 0 {
		if s.other[id] {
			return false
		}
		s.other[id] = true
		return true
	}
	if s.bits[i] == nil {
		s.bits[i] = make([]uint64, (s.v.packs[i].idx.n+63)/64)
	}
	w, b := &s.bits[i][pos/64], uint64(1)<<(pos%64)
	if *w&b != 0 {
		return false
	}
	*w |= b
	return true
}

// usesPack reports whether an object of the set is in pack i of the view.
func (s *objectSet) usesPack(i int) bool {
	for _, w := range s.bits[i] {
		if w != 0 {
			return true
		}
	}
	return false
}

// objectLRU is go-git's cache.Object bounded by bytes with each object
// counted as its size plus objectOverhead (go-git's ObjectLRU counts the
// size only: a million tiny objects fitted in its bound, 250 bytes of heap
// each).
type objectLRU struct {
	mu    sync.Mutex
	max   int64
	used  int64
	ll    *list.List
	items map[plumbing.Hash]*list.Element
}

const objectOverhead = 256

func newObjectLRU(max int64) *objectLRU {
	return &objectLRU{max: max, ll: list.New(), items: map[plumbing.Hash]*list.Element{}}
}

func objectCost(o plumbing.EncodedObject) int64 { return o.Size() + objectOverhead }

func (c *objectLRU) Put(o plumbing.EncodedObject) {
	cost := objectCost(o)
	if cost > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[o.Hash()]; ok {
		c.ll.MoveToFront(e)
		return
	}
	for c.used+cost > c.max {
		last := c.ll.Back()
		old := last.Value.(plumbing.EncodedObject)
		c.ll.Remove(last)
		delete(c.items, old.Hash())
		c.used -= objectCost(old)
	}
	c.items[o.Hash()] = c.ll.PushFront(o)
	c.used += cost
}

func (c *objectLRU) Get(k plumbing.Hash) (plumbing.EncodedObject, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(plumbing.EncodedObject), true
}

func (c *objectLRU) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	c.items = map[plumbing.Hash]*list.Element{}
	c.used = 0
}
