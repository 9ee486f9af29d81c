package repo

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
)

// packIndex is a version 2 pack index (.idx) read in place: the file is
// mapped read-only (see mapFile), so looking an object up costs a binary
// search of the mapped names and no heap per object. go-git's own index
// (idxfile.MemoryIndex) loads every name, offset and CRC-32 onto the heap,
// and the first read by offset adds a map of every offset: about 110 bytes
// an object, 160 MiB for a pack of 1.5 million objects. packIndex
// implements idxfile.Index, so go-git's pack reader reads objects through
// it.
//
// An index file may come from a removable disk, so it is checked as it is
// opened (signature, version, a non-decreasing fan-out table, a size that
// fits its count) and each offset as it is read (within the pack).
type packIndex struct {
	data     []byte // the mapped file
	n        int
	names    []byte // n × 20
	crcs     []byte // n × 4
	off32    []byte // n × 4
	off64    []byte // n64 × 8
	packSize int64

	revOnce sync.Once
	rev     []uint32 // positions sorted by offset (4 bytes an object), built by FindHash
	revErr  error
}

// ErrBadIndex reports a pack index that does not follow git's format.
var ErrBadIndex = errors.New("bad pack index")

// openPackIndex maps the index at path of the pack of packSize bytes.
func openPackIndex(path string, packSize int64) (*packIndex, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const head = 8 + 256*4
	size := fi.Size()
	if size < head+40 || size > 1<<40 {
		return nil, fmt.Errorf("%w: %s: %d bytes", ErrBadIndex, path, size)
	}
	data, unmap, err := mapFile(f, int(size))
	if err != nil {
		return nil, fmt.Errorf("map pack index %s: %w", path, err)
	}
	x := &packIndex{data: data, packSize: packSize}
	// The mapping lives as long as the index is reachable (readers may hold
	// it after the pack is pruned).
	runtime.AddCleanup(x, func(f func()) { f() }, unmap)
	if !bytes.Equal(data[:8], []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2}) {
		return nil, fmt.Errorf("%w: %s: not a version 2 index", ErrBadIndex, path)
	}
	var prev uint32
	for i := range 256 {
		v := binary.BigEndian.Uint32(data[8+4*i:])
		if v < prev {
			return nil, fmt.Errorf("%w: %s: fan-out table decreases", ErrBadIndex, path)
		}
		prev = v
	}
	n := int64(prev)
	rest := size - head - 28*n - 40
	if rest < 0 || rest%8 != 0 || rest/8 > n {
		return nil, fmt.Errorf("%w: %s: %d bytes for %d objects", ErrBadIndex, path, size, n)
	}
	x.n = int(n)
	at := int64(head)
	take := func(k int64) []byte { b := data[at : at+k]; at += k; return b }
	x.names = take(20 * n)
	x.crcs = take(4 * n)
	x.off32 = take(4 * n)
	x.off64 = take(rest)
	return x, nil
}

func (x *packIndex) fanout(b byte) uint32 { return binary.BigEndian.Uint32(x.data[8+4*int(b):]) }

func (x *packIndex) name(pos int) []byte { return x.names[20*pos : 20*pos+20] }

// find returns the position of id, or -1.
func (x *packIndex) find(id plumbing.Hash) int {
	lo := 0
	if id[0] > 0 {
		lo = int(x.fanout(id[0] - 1))
	}
	hi := int(x.fanout(id[0]))
	if hi > x.n || lo > hi {
		return -1
	}
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		switch c := bytes.Compare(x.name(m), id[:]); {
		case c == 0:
			return m
		case c < 0:
			lo = m + 1
		default:
			hi = m
		}
	}
	return -1
}

// offset is the pack offset of the object at pos.
func (x *packIndex) offset(pos int) (int64, error) {
	v := binary.BigEndian.Uint32(x.off32[4*pos:])
	off := int64(v)
	if v&(1<<31) != 0 {
		k := int(v &^ (1 << 31))
		if 8*k+8 > len(x.off64) {
			return 0, fmt.Errorf("%w: 64-bit offset %d of %d", ErrBadIndex, k, len(x.off64)/8)
		}
		off = int64(binary.BigEndian.Uint64(x.off64[8*k:]))
	}
	if off < 12 || off >= x.packSize-packTrailerLen {
		return 0, fmt.Errorf("%w: offset %d outside the pack of %d bytes", ErrBadIndex, off, x.packSize)
	}
	return off, nil
}

func (x *packIndex) Contains(h plumbing.Hash) (bool, error) { return x.find(h) >= 0, nil }

func (x *packIndex) FindOffset(h plumbing.Hash) (int64, error) {
	pos := x.find(h)
	if pos < 0 {
		return 0, plumbing.ErrObjectNotFound
	}
	return x.offset(pos)
}

func (x *packIndex) FindCRC32(h plumbing.Hash) (uint32, error) {
	pos := x.find(h)
	if pos < 0 {
		return 0, plumbing.ErrObjectNotFound
	}
	return binary.BigEndian.Uint32(x.crcs[4*pos:]), nil
}

// FindHash finds the object at offset o (go-git's pack reader asks it for
// an ofs-delta's base), through positions sorted by offset: 4 bytes an
// object, built on the first call.
func (x *packIndex) FindHash(o int64) (plumbing.Hash, error) {
	x.revOnce.Do(func() {
		rev := make([]uint32, x.n)
		for i := range rev {
			rev[i] = uint32(i)
			if _, err := x.offset(i); err != nil {
				x.revErr = err
				return
			}
		}
		slices.SortFunc(rev, func(a, b uint32) int {
			oa, _ := x.offset(int(a))
			ob, _ := x.offset(int(b))
			return cmp.Compare(oa, ob)
		})
		x.rev = rev
	})
	if x.revErr != nil {
		return plumbing.ZeroHash, x.revErr
	}
	i, ok := slices.BinarySearchFunc(x.rev, o, func(p uint32, o int64) int {
		op, _ := x.offset(int(p))
		return cmp.Compare(op, o)
	})
	if !ok {
		return plumbing.ZeroHash, plumbing.ErrObjectNotFound
	}
	var h plumbing.Hash
	copy(h[:], x.name(int(x.rev[i])))
	return h, nil
}

func (x *packIndex) Count() (int64, error) { return int64(x.n), nil }

func (x *packIndex) Entries() (idxfile.EntryIter, error) {
	return &packIndexIter{x: x}, nil
}

func (x *packIndex) EntriesByOffset() (idxfile.EntryIter, error) {
	if _, err := x.FindHash(-1); err != nil && err != plumbing.ErrObjectNotFound {
		return nil, err
	}
	return &packIndexIter{x: x, byOffset: true}, nil
}

type packIndexIter struct {
	x        *packIndex
	i        int
	byOffset bool
}

func (it *packIndexIter) Next() (*idxfile.Entry, error) {
	if it.i >= it.x.n {
		return nil, io.EOF
	}
	pos := it.i
	if it.byOffset {
		pos = int(it.x.rev[pos])
	}
	it.i++
	off, err := it.x.offset(pos)
	if err != nil {
		return nil, err
	}
	e := &idxfile.Entry{CRC32: binary.BigEndian.Uint32(it.x.crcs[4*pos:]), Offset: uint64(off)}
	copy(e.Hash[:], it.x.name(pos))
	return e, nil
}

func (it *packIndexIter) Close() error { it.i = it.x.n; return nil }
