package repo

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/klauspost/compress/zlib"
)

// Deltas are resolved by pullship itself, not by go-git: go-git v5's pack
// parser holds every object whole, applies deltas in memory with no bound
// on sizes or chain depth, and preallocates from the sender's counts (a
// 16 KiB pack with a delta first took it to 2.1 GB). The git protocol has
// no way to ask a server for a pack without deltas, and servers that
// repacked (git gc, git repack -adf) send them, so they must be read.
//
// The bounds: a delta's result and every base it is applied to hold at
// most maxDeltaObject bytes (an image chunk is at most 8 MiB; bigger
// objects must come whole), a chain is at most maxDeltaDepth deltas deep
// (git's default is 50, --aggressive 250), every delta's base must be in
// the same pack (no thin packs), and the bytes inflated and produced while
// resolving are at most twice the pack's inflate limit. Memory: the base
// and the result of one delta (two buffers, reused), and a cache of small
// resolved objects (deltaCacheBytes) so that a chain is not rebuilt for
// each of its deltas.
const (
	maxDeltaObject  = 9 << 20
	maxDeltaDepth   = 500
	deltaCacheBytes = 8 << 20
	maxCachedObject = 1 << 20
)

// ErrDeltaLimit reports a delta beyond the bounds pullship resolves deltas
// within (result size, chain depth, work).
var ErrDeltaLimit = errors.New("delta exceeds the resolver's bounds")

// idxEntry is one object of a received pack: 40 bytes each, the only
// per-object memory of a fetch. A delta entry's id is zero until resolved.
type idxEntry struct {
	id     plumbing.Hash
	offset int64
	crc    uint32
	delta  bool
}

// spoolEntry is an entry's header as read back from the spooled pack.
type spoolEntry struct {
	typ        byte // pack type code, 1-4 or a delta (6, 7)
	size       int64
	baseOffset int64         // ofs-delta
	baseID     plumbing.Hash // ref-delta
	dataOffset int64
}

// readEntryHeaderBuf parses the entry header at off in the spooled pack f,
// reading through b (a buffer the caller reuses: one header read per delta
// must not allocate).
func readEntryHeaderBuf(f io.ReaderAt, off int64, b *[64]byte) (spoolEntry, error) {
	n, err := f.ReadAt(b[:], off)
	if n == 0 {
		return spoolEntry{}, fmt.Errorf("entry at offset %d: %w", off, unexpected(err))
	}
	p := b[:n]
	i := 0
	next := func() (byte, error) {
		if i >= len(p) {
			return 0, fmt.Errorf("entry at offset %d: header cut", off)
		}
		c := p[i]
		i++
		return c, nil
	}
	c, err := next()
	if err != nil {
		return spoolEntry{}, err
	}
	e := spoolEntry{typ: c >> 4 & 7, size: int64(c & 15)}
	for shift := uint(4); c&0x80 != 0; shift += 7 {
		if shift > 56 {
			return spoolEntry{}, fmt.Errorf("entry at offset %d: size overflows", off)
		}
		if c, err = next(); err != nil {
			return spoolEntry{}, err
		}
		e.size |= int64(c&0x7f) << shift
	}
	switch e.typ {
	case packTypeOfsDelta:
		if c, err = next(); err != nil {
			return spoolEntry{}, err
		}
		rel := int64(c & 0x7f)
		for c&0x80 != 0 {
			if rel > math.MaxInt64>>8 {
				return spoolEntry{}, fmt.Errorf("entry at offset %d: base offset overflows", off)
			}
			if c, err = next(); err != nil {
				return spoolEntry{}, err
			}
			rel = (rel+1)<<7 | int64(c&0x7f)
		}
		e.baseOffset = off - rel
	case packTypeRefDelta:
		if len(p)-i < 20 {
			return spoolEntry{}, fmt.Errorf("entry at offset %d: header cut", off)
		}
		copy(e.baseID[:], p[i:i+20])
		i += 20
	}
	e.dataOffset = off + int64(i)
	return e, nil
}

// deltaHeader reads a delta's source and result sizes (git's varints).
func deltaHeader(r io.ByteReader) (src, dst int64, err error) {
	for _, v := range []*int64{&src, &dst} {
		for shift := uint(0); ; shift += 7 {
			if shift > 56 {
				return 0, 0, errors.New("delta header overflows")
			}
			c, err := r.ReadByte()
			if err != nil {
				return 0, 0, fmt.Errorf("delta header: %w", unexpected(err))
			}
			*v |= int64(c&0x7f) << shift
			if c&0x80 == 0 {
				break
			}
		}
	}
	return src, dst, nil
}

// resolver resolves the delta entries of a spooled pack.
type resolver struct {
	f       *os.File
	entries []idxEntry // in pack order (so by offset)
	byID    []int32    // indices of resolved entries, sorted by id
	types   []byte     // resolved object type of each entry (0: not yet)
	work    int64      // bytes inflated and produced so far
	budget  int64
	cache   map[int32][]byte
	order   []int32 // cache insertion order (FIFO eviction)
	cached  int64
	zr      io.ReadCloser
	br      *bufio.Reader
	dbr     *bufio.Reader // a delta's instructions, reused
	hdr     [64]byte      // an entry header, read
	buf     [2][]byte     // a delta's base and result, reused
	depths  []uint16      // chain depth of each resolved entry
	// The last object resolved stays in buf[lastBuf]: the next delta is
	// often against it, and it may be too big for the cache.
	last    int32
	lastBuf int
}

// resolveDeltas computes the id of every delta entry of the pack in f.
// budget bounds the bytes inflated and produced.
func resolveDeltas(f *os.File, entries []idxEntry, budget int64) error {
	r := &resolver{f: f, entries: entries, budget: budget, types: make([]byte, len(entries)),
		depths: make([]uint16, len(entries)), cache: map[int32][]byte{}, last: -1}
	pending := 0
	for i := range entries {
		if entries[i].delta {
			pending++
		}
	}
	for pending > 0 {
		r.index()
		progress := 0
		for i := range entries {
			if !entries[i].delta || r.types[i] != 0 {
				continue
			}
			ok, err := r.resolve(int32(i))
			if err != nil {
				return err
			}
			if ok {
				progress++
			}
		}
		if progress == 0 {
			for i := range entries {
				if entries[i].delta && r.types[i] == 0 {
					return fmt.Errorf("%w: delta at offset %d: base not in the pack", ErrBadPack, entries[i].offset)
				}
			}
		}
		pending -= progress
	}
	return nil
}

// index sorts the resolved entries by id, for ref-delta bases.
func (r *resolver) index() {
	r.byID = r.byID[:0]
	for i := range r.entries {
		if !r.entries[i].delta || r.types[i] != 0 {
			r.byID = append(r.byID, int32(i))
		}
	}
	slices.SortFunc(r.byID, func(a, b int32) int { return bytes.Compare(r.entries[a].id[:], r.entries[b].id[:]) })
}

func (r *resolver) findID(id plumbing.Hash) int32 {
	i, ok := slices.BinarySearchFunc(r.byID, id, func(e int32, id plumbing.Hash) int { return bytes.Compare(r.entries[e].id[:], id[:]) })
	if !ok {
		return -1
	}
	return r.byID[i]
}

func (r *resolver) findOffset(off int64) int32 {
	i, ok := slices.BinarySearchFunc(r.entries, off, func(e idxEntry, off int64) int {
		switch {
		case e.offset < off:
			return -1
		case e.offset > off:
			return 1
		}
		return 0
	})
	if !ok {
		return -1
	}
	return int32(i)
}

// resolve computes entry i's id; false when its chain leads to a ref-delta
// base not resolved yet (a later round may find it).
func (r *resolver) resolve(i int32) (bool, error) {
	// Walk down to a base whose content is at hand: cached, or whole.
	chain := []int32{i}
	var heads []spoolEntry
	for {
		top := chain[len(chain)-1]
		if _, ok := r.cache[top]; ok && top != i || top == r.last {
			break
		}
		if !r.entries[top].delta {
			break
		}
		h, err := readEntryHeaderBuf(r.f, r.entries[top].offset, &r.hdr)
		if err != nil {
			return false, fmt.Errorf("%w: %w", ErrBadPack, err)
		}
		heads = append(heads, h)
		var base int32
		if h.typ == packTypeOfsDelta {
			if base = r.findOffset(h.baseOffset); base < 0 || base >= top {
				return false, fmt.Errorf("%w: delta at offset %d: base offset %d is no earlier entry", ErrBadPack, r.entries[top].offset, h.baseOffset)
			}
		} else if base = r.findID(h.baseID); base < 0 {
			return false, nil
		}
		if len(chain) > maxDeltaDepth {
			return false, fmt.Errorf("%w: delta at offset %d: chain deeper than %d", ErrDeltaLimit, r.entries[i].offset, maxDeltaDepth)
		}
		for _, c := range chain {
			if c == base {
				return false, fmt.Errorf("%w: delta at offset %d: chain loops", ErrBadPack, r.entries[i].offset)
			}
		}
		chain = append(chain, base)
	}
	baseIdx := chain[len(chain)-1]
	var data []byte
	var typ byte
	w := 1 // the buffer the next result goes to, not the base's
	if baseIdx == r.last {
		data, typ, w = r.buf[r.lastBuf], r.types[baseIdx], 1-r.lastBuf
	} else {
		var err error
		if data, typ, err = r.content(baseIdx); err != nil { // into buf[0], or cached
			return false, err
		}
	}
	r.last = -1
	for k := len(chain) - 2; k >= 0; k-- {
		e := chain[k]
		if r.depths[e] = r.depths[chain[k+1]] + 1; r.depths[e] > maxDeltaDepth {
			return false, fmt.Errorf("%w: delta at offset %d: chain deeper than %d", ErrDeltaLimit, r.entries[e].offset, maxDeltaDepth)
		}
		var err error
		if data, err = r.apply(e, heads[k], data, r.buf[w][:0]); err != nil {
			return false, err
		}
		r.buf[w] = data
		r.last, r.lastBuf = e, w
		w ^= 1
		id := HashObject(plumbing.ObjectType(typ), data)
		r.entries[e].id = id
		r.types[e] = typ
		r.put(e, data)
	}
	return true, nil
}

// content returns the inflated content and type of a resolved entry.
func (r *resolver) content(i int32) ([]byte, byte, error) {
	if b, ok := r.cache[i]; ok {
		return b, r.types[i], nil
	}
	h, err := readEntryHeaderBuf(r.f, r.entries[i].offset, &r.hdr)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrBadPack, err)
	}
	if h.size > maxDeltaObject {
		return nil, 0, fmt.Errorf("%w: delta base at offset %d holds %d bytes, limit %d", ErrDeltaLimit, r.entries[i].offset, h.size, maxDeltaObject)
	}
	if err := r.spend(h.size); err != nil {
		return nil, 0, err
	}
	zr, err := r.inflater(h.dataOffset)
	if err != nil {
		return nil, 0, err
	}
	if int64(cap(r.buf[0])) < h.size {
		r.buf[0] = make([]byte, h.size)
	}
	b := r.buf[0][:h.size]
	if _, err := io.ReadFull(zr, b); err != nil {
		return nil, 0, fmt.Errorf("%w: entry at offset %d: %w", ErrBadPack, r.entries[i].offset, unexpected(err))
	}
	r.types[i] = h.typ
	r.put(i, b)
	return b, h.typ, nil
}

func (r *resolver) inflater(off int64) (io.Reader, error) {
	sr := io.NewSectionReader(r.f, off, math.MaxInt64-off)
	if r.br == nil {
		r.br = bufio.NewReaderSize(sr, 64<<10)
	} else {
		r.br.Reset(sr)
	}
	var err error
	if r.zr == nil {
		r.zr, err = zlib.NewReader(r.br)
	} else {
		err = r.zr.(zlib.Resetter).Reset(r.br, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: entry data at offset %d: %w", ErrBadPack, off, err)
	}
	return r.zr, nil
}

func (r *resolver) spend(n int64) error {
	if r.work += n; r.work > r.budget {
		return fmt.Errorf("%w: resolving deltas took %d bytes of work, limit %d", ErrDeltaLimit, r.work, r.budget)
	}
	return nil
}

// apply applies delta entry e (header h) to base, into out's array if it
// is large enough.
func (r *resolver) apply(e int32, h spoolEntry, base, out []byte) ([]byte, error) {
	off := r.entries[e].offset
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: delta at offset %d: %s", ErrBadPack, off, fmt.Sprintf(format, a...))
	}
	zr, err := r.inflater(h.dataOffset)
	if err != nil {
		return nil, err
	}
	if r.dbr == nil {
		r.dbr = bufio.NewReaderSize(nil, 4<<10)
	}
	d := r.dbr
	d.Reset(io.LimitReader(zr, h.size))
	src, dst, err := deltaHeader(d)
	if err != nil {
		return nil, bad("%v", err)
	}
	if src != int64(len(base)) {
		return nil, bad("for a base of %d bytes, its base has %d", src, len(base))
	}
	if dst > maxDeltaObject {
		return nil, fmt.Errorf("%w: delta at offset %d makes %d bytes, limit %d", ErrDeltaLimit, off, dst, maxDeltaObject)
	}
	if err := r.spend(h.size + dst); err != nil {
		return nil, err
	}
	if int64(cap(out)) < dst {
		out = make([]byte, 0, dst)
	}
	for {
		c, err := d.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, bad("%v", err)
		}
		switch {
		case c&0x80 != 0:
			var v [7]byte
			for k := range 7 {
				if c&(1<<k) != 0 {
					if v[k], err = d.ReadByte(); err != nil {
						return nil, bad("copy instruction cut")
					}
				}
			}
			cpOff := int64(binary.LittleEndian.Uint32(v[:4]))
			cpLen := int64(v[4]) | int64(v[5])<<8 | int64(v[6])<<16
			if cpLen == 0 {
				cpLen = 0x10000
			}
			if cpOff+cpLen > int64(len(base)) || int64(len(out))+cpLen > dst {
				return nil, bad("copies %d bytes at %d, outside its base or result", cpLen, cpOff)
			}
			out = append(out, base[cpOff:cpOff+cpLen]...)
		case c != 0:
			if int64(len(out))+int64(c) > dst {
				return nil, bad("inserts past its result size")
			}
			n := len(out)
			out = out[:n+int(c)]
			if _, err := io.ReadFull(d, out[n:]); err != nil {
				return nil, bad("insert instruction cut")
			}
		default:
			return nil, bad("reserved instruction 0")
		}
	}
	if int64(len(out)) != dst {
		return nil, bad("makes %d bytes, its header says %d", len(out), dst)
	}
	return out, nil
}

// put caches a copy of a resolved object's content (a small one: big
// objects are rarely bases of long chains), evicting the oldest beyond the
// cache's bound. Each object counts with cacheEntryCost more than its
// bytes (its map slot, its place in order, its allocation's rounding): a
// pack of a million tiny objects would otherwise fill the cache with
// bookkeeping.
func (r *resolver) put(i int32, b []byte) {
	if _, ok := r.cache[i]; ok || int64(len(b)) > maxCachedObject {
		return
	}
	b = bytes.Clone(b)
	cost := int64(len(b)) + cacheEntryCost
	for r.cached+cost > deltaCacheBytes && len(r.order) > 0 {
		old := r.order[0]
		r.order = r.order[1:]
		r.cached -= int64(len(r.cache[old])) + cacheEntryCost
		delete(r.cache, old)
	}
	if len(r.order) == 0 {
		r.order = nil // let the drained array go
	}
	r.cache[i] = b
	r.cached += cost
	r.order = append(r.order, i)
}

// cacheEntryCost is what the resolver's cache spends on an object besides
// its bytes.
const cacheEntryCost = 64

// writeIndex writes a version 2 pack index of entries (sorted by id here)
// for the pack whose checksum is sum. A duplicate id is a bad pack.
func writeIndex(w io.Writer, entries []idxEntry, sum plumbing.Hash) error {
	slices.SortFunc(entries, func(a, b idxEntry) int { return bytes.Compare(a.id[:], b.id[:]) })
	for i := 1; i < len(entries); i++ {
		if entries[i].id == entries[i-1].id {
			return fmt.Errorf("%w: object %s twice", ErrBadPack, entries[i].id)
		}
	}
	h := sha1.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 64<<10)
	var b [8]byte
	put32 := func(v uint32) { binary.BigEndian.PutUint32(b[:4], v); bw.Write(b[:4]) }
	bw.Write([]byte{0xff, 't', 'O', 'c'})
	put32(2)
	var fan [256]uint32
	for _, e := range entries {
		fan[e.id[0]]++
	}
	var n uint32
	for _, c := range fan {
		n += c
		put32(n)
	}
	for i := range entries {
		bw.Write(entries[i].id[:])
	}
	for _, e := range entries {
		put32(e.crc)
	}
	var large []int64
	for _, e := range entries {
		if e.offset < 1<<31 {
			put32(uint32(e.offset))
			continue
		}
		put32(1<<31 | uint32(len(large)))
		large = append(large, e.offset)
	}
	for _, o := range large {
		binary.BigEndian.PutUint64(b[:], uint64(o))
		bw.Write(b[:])
	}
	bw.Write(sum[:])
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(h.Sum(nil))
	return err
}
