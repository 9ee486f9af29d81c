package repo

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"
	"strconv"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/klauspost/compress/zlib"
)

// ErrBadPack reports a pack that does not follow git's pack format or whose
// content differs from what its headers and trailer say.
var ErrBadPack = errors.New("bad pack")

// Pack format limits (git's own: version 2 or 3 headers, 32-bit counts).
const (
	packTypeOfsDelta = 6
	packTypeRefDelta = 7
	packTrailerLen   = 20
)

// packLimits bound what indexPack accepts.
type packLimits struct {
	// pack is the most bytes the pack may take (0: unknown), for the
	// store's budget (see Store.reserve).
	pack int64
	// inflate bounds the sum of the inflated sizes the entries declare (a
	// delta counts with the size of the object it makes).
	inflate int64
	// objects bounds the entry count: 40 bytes each.
	objects int
	// table, if set, gives the room for count entries (len 0, cap count):
	// a file-backed mapping (see Store.receivePack), so that a pack's
	// entries take no heap. Otherwise they grow on the heap.
	table func(count int) ([]idxEntry, error)
	// wants, if set, are what the pack must complete: every object of the
	// pack reachable from them, and everything they reach in the pack or
	// in the store. A pack that is not is removed again.
	wants []plumbing.Hash
	// bottom, with wants, are the commits where a history fetched to a
	// depth stops (the parents of its deepest commits): the wanted check
	// does not walk into them, so neither the pack nor the store need
	// hold them, and a pack holding one of them is refused.
	bottom []plumbing.Hash
}

// fetchLimits are the limits of a pack a fetch receives, from what its
// request says: at most pack bytes (0: 4 GiB), inflate bytes inflated (0:
// 16 times the pack) and objects entries (0: defaultMaxObjects).
func fetchLimits(pack, inflate int64, objects int) packLimits {
	if pack <= 0 {
		pack = 4 << 30
	}
	if inflate <= 0 {
		inflate = 16 * pack
	}
	if objects <= 0 {
		objects = defaultMaxObjects(pack)
	}
	return packLimits{pack: pack, inflate: inflate, objects: objects}
}

// defaultMaxObjects is the object count allowed in a pack of limit bytes
// when the caller does not know better: an entry of a release or status
// history takes a few hundred bytes.
func defaultMaxObjects(limit int64) int {
	return int(min(max(limit/256, 1<<12), 1<<22))
}

// indexPack reads a whole pack from r in one pass, copying every byte to
// spool, and indexes it: each entry is inflated once, streamed through
// SHA-1 (never held whole), and checked against its declared size; the
// trailer must be the SHA-1 of everything before it. lim.inflate bounds the
// sum of the declared (inflated) sizes, so a zlib bomb costs bounded CPU.
//
// After each entry is checked, obs (if not nil) learns where it is (the
// spool is flushed first, so a reader of the spool file sees its bytes) and,
// for a blob it gave a buffer for, gets the inflated content too.
//
// A delta entry (servers that repacked with deltas send them) is inflated
// and checked the same way, its base must be an earlier entry (ofs-delta)
// or any entry (ref-delta), and it is returned with a zero id: the caller
// resolves it with resolveDeltas once the pack is spooled. obs does not
// learn of it.
//
// A stream that ends early (a cut connection) is an I/O error wrapping
// io.ErrUnexpectedEOF, not ErrBadPack; a read error of r is returned as it
// is.
func indexPack(r io.Reader, spool *bufio.Writer, lim packLimits, obs packObserver) (plumbing.Hash, []idxEntry, error) {
	pr := newPackReader(r, spool)
	br := pr.br // every read of the pack goes through br
	var hdr [12]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return plumbing.ZeroHash, nil, pr.fail("header", err)
	}
	if string(hdr[:4]) != "PACK" {
		return plumbing.ZeroHash, nil, fmt.Errorf("%w: no PACK signature", ErrBadPack)
	}
	if v := binary.BigEndian.Uint32(hdr[4:8]); v != 2 && v != 3 {
		return plumbing.ZeroHash, nil, fmt.Errorf("%w: version %d", ErrBadPack, v)
	}
	count := binary.BigEndian.Uint32(hdr[8:12])
	if int64(count) > int64(lim.objects) {
		return plumbing.ZeroHash, nil, fmt.Errorf("%w: %d objects declared, limit %d", ErrPackTooLarge, count, lim.objects)
	}
	var entries []idxEntry
	if lim.table != nil && count > 0 {
		var err error
		if entries, err = lim.table(int(count)); err != nil {
			return plumbing.ZeroHash, nil, err
		}
	} else {
		// The count is the sender's word: grow as entries arrive.
		entries = make([]idxEntry, 0, min(count, maxIndexPrealloc))
	}

	var (
		zr       io.ReadCloser
		inflated int64
		h        = newAsyncSHA1()
		deltaBuf []byte
	)
	defer h.close()
	for i := uint32(0); i < count; i++ {
		if err := pr.flush(); err != nil {
			return plumbing.ZeroHash, nil, err
		}
		offset := pr.offset()
		where := fmt.Sprintf("entry %d at offset %d", i, offset)
		pr.crc.Reset()
		typ, size, err := pr.entryHeader()
		if err != nil {
			return plumbing.ZeroHash, nil, pr.fail(where, err)
		}
		isDelta := typ == packTypeOfsDelta || typ == packTypeRefDelta
		ot := plumbing.ObjectType(typ)
		if !isDelta && (ot < plumbing.CommitObject || ot > plumbing.TagObject) {
			return plumbing.ZeroHash, nil, fmt.Errorf("%w: %s: type %d", ErrBadPack, where, typ)
		}
		if isDelta {
			if err := pr.deltaBase(typ, offset, entries); err != nil {
				return plumbing.ZeroHash, nil, pr.fail(where, err)
			}
			// A delta's data is its result's size and a little more at
			// most (inserts cost a byte per 127).
			if size > maxDeltaObject+maxDeltaObject/64+64 {
				return plumbing.ZeroHash, nil, fmt.Errorf("%w: %s: %d bytes of delta data, limit %d", ErrDeltaLimit, where, size, maxDeltaObject)
			}
		} else if inflated += size; inflated > lim.inflate {
			return plumbing.ZeroHash, nil, fmt.Errorf("%w: %d inflated bytes declared by entry %d, limit %d", ErrPackTooLarge, inflated, i, lim.inflate)
		}
		dataOffset := pr.offset()
		if zr == nil {
			zr, err = zlib.NewReader(br)
		} else {
			err = zr.(zlib.Resetter).Reset(br, nil)
		}
		if err != nil {
			return plumbing.ZeroHash, nil, pr.fail(where, err)
		}
		if isDelta {
			if deltaBuf == nil {
				deltaBuf = make([]byte, 32<<10)
			}
			dst, err := inflateDelta(zr, size, deltaBuf)
			if err != nil {
				return plumbing.ZeroHash, nil, pr.fail(where, err)
			}
			if dst > maxDeltaObject {
				return plumbing.ZeroHash, nil, fmt.Errorf("%w: %s: delta makes %d bytes, limit %d", ErrDeltaLimit, where, dst, maxDeltaObject)
			}
			if inflated += dst; inflated > lim.inflate {
				return plumbing.ZeroHash, nil, fmt.Errorf("%w: %d inflated bytes declared by entry %d, limit %d", ErrPackTooLarge, inflated, i, lim.inflate)
			}
			if err := pr.flush(); err != nil {
				return plumbing.ZeroHash, nil, err
			}
			entries = append(entries, idxEntry{offset: offset, crc: pr.crc.Sum32(), delta: true})
			continue
		}
		h.header(ot, size)
		var keep []byte // the inflated content, for obs
		if obs != nil && ot == plumbing.BlobObject {
			keep = obs.buffer(size)
		}
		err = inflateEntry(zr, size, h, keep)
		if err == nil {
			err = pr.flush()
		} else {
			err = pr.fail(where, err)
		}
		id := h.sum() // keep is the hasher's until its sum is out
		if err != nil {
			if keep != nil {
				obs.release(keep)
			}
			return plumbing.ZeroHash, nil, err
		}
		entries = append(entries, idxEntry{id: id, offset: offset, crc: pr.crc.Sum32()})
		if obs != nil {
			if err := spool.Flush(); err != nil {
				if keep != nil {
					obs.release(keep)
				}
				return plumbing.ZeroHash, nil, err
			}
			obs.add(livePackObject{id: id, typ: ot, size: size, dataOffset: dataOffset}, keep)
		}
	}
	if err := pr.flush(); err != nil {
		return plumbing.ZeroHash, nil, err
	}
	want := pr.sum.Sum(nil)
	pr.sum = nil // the trailer is not part of the checksum
	var trailer [packTrailerLen]byte
	if _, err := io.ReadFull(br, trailer[:]); err != nil {
		return plumbing.ZeroHash, nil, pr.fail("trailer", err)
	}
	if string(trailer[:]) != string(want) {
		return plumbing.ZeroHash, nil, fmt.Errorf("%w: trailer checksum %x, content hashes to %x", ErrBadPack, trailer, want)
	}
	var one [1]byte
	if n, err := io.ReadFull(br, one[:]); n > 0 {
		return plumbing.ZeroHash, nil, fmt.Errorf("%w: data after the trailer", ErrBadPack)
	} else if err != io.EOF {
		return plumbing.ZeroHash, nil, unexpected(err)
	}
	if err := pr.flush(); err != nil {
		return plumbing.ZeroHash, nil, err
	}
	var sum plumbing.Hash
	copy(sum[:], trailer[:])
	return sum, entries, nil
}

// fail classifies an error met while reading the part of the pack named by
// where: a read error of the stream is itself, a stream that ended early is
// a cut (io.ErrUnexpectedEOF), anything else says the pack is bad.
func (p *packReader) fail(where string, err error) error {
	if p.err != nil && p.err != io.EOF {
		return fmt.Errorf("pack %s: %w", where, p.err)
	}
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) && p.err == io.EOF {
		return fmt.Errorf("pack cut short: %s: %w", where, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("%w: %s: %w", ErrBadPack, where, err)
}

// deltaBase reads a delta entry's base reference; an ofs-delta's base
// must start an earlier entry.
func (p *packReader) deltaBase(typ byte, offset int64, entries []idxEntry) error {
	if typ == packTypeRefDelta {
		var id [20]byte
		_, err := io.ReadFull(p.br, id[:])
		return unexpected(err)
	}
	c, err := p.br.ReadByte()
	if err != nil {
		return unexpected(err)
	}
	rel := int64(c & 0x7f)
	for c&0x80 != 0 {
		if rel > offset {
			return errors.New("delta base offset out of range")
		}
		if c, err = p.br.ReadByte(); err != nil {
			return unexpected(err)
		}
		rel = (rel+1)<<7 | int64(c&0x7f)
	}
	base := offset - rel
	if _, ok := slices.BinarySearchFunc(entries, base, func(e idxEntry, off int64) int { return cmp.Compare(e.offset, off) }); !ok || rel == 0 {
		return fmt.Errorf("delta base offset %d starts no earlier entry", base)
	}
	return nil
}

// inflateDelta inflates exactly size bytes of delta data from zr (through
// buf), checks the zlib stream ends there, and returns the size of the
// object the delta makes.
func inflateDelta(zr io.Reader, size int64, buf []byte) (int64, error) {
	var head []byte
	var n int64
	for {
		m, err := zr.Read(buf[:min(int64(len(buf)), size-n+1)])
		if len(head) < 20 {
			head = append(head, buf[:min(m, 20-len(head))]...)
		}
		n += int64(m)
		if n > size {
			return 0, fmt.Errorf("inflates past the %d bytes its header says", size)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if n < size {
		return 0, fmt.Errorf("inflates to %d bytes, header says %d", n, size)
	}
	_, dst, err := deltaHeader(bytes.NewReader(head))
	return dst, err
}

// maxIndexPrealloc bounds the entries preallocated from a pack header's
// count.
const maxIndexPrealloc = 1 << 12

// packObserver follows a pack being indexed (a [LivePack]).
type packObserver interface {
	// buffer returns a buffer of len size to inflate a blob into, or nil.
	buffer(size int64) []byte
	// release takes back a buffer that add will not get.
	release(b []byte)
	// add announces a checked entry, with its content if buffer gave one.
	add(o livePackObject, data []byte)
}

// inflateEntry inflates exactly size bytes from zr into h (and into keep,
// if not nil), then checks the zlib stream ends there, Adler-32 included.
func inflateEntry(zr io.Reader, size int64, h *asyncSHA1, keep []byte) error {
	var n int64
	for n < size {
		var p []byte
		pooled := keep == nil
		if pooled {
			p = h.block()
			p = p[:min(int64(len(p)), size-n)]
		} else {
			p = keep[n:size:size]
		}
		m, err := zr.Read(p)
		h.write(p[:m], pooled)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if n < size {
		return fmt.Errorf("inflates to %d bytes, header says %d", n, size)
	}
	var one [1]byte
	if m, err := zr.Read(one[:]); m > 0 {
		return fmt.Errorf("inflates past the %d bytes its header says", size)
	} else if err != io.EOF {
		return unexpected(err)
	}
	return nil
}

// asyncSHA1 computes entry ids on its own goroutine, so an entry's bytes
// are hashed while the next ones inflate (SHA-1 is a sixth of the work).
// Blocks are either from its pool (block, handed back once hashed) or
// slices of a caller's buffer that stays untouched until sum returns.
type asyncSHA1 struct {
	work chan hashBlock
	sums chan plumbing.Hash
	free chan []byte
}

type hashBlock struct {
	b      []byte
	pooled bool
	end    bool // no data: send the entry's id and start the next entry
	header bool // no data: hash the object header of typ and size
	typ    plumbing.ObjectType
	size   int64
}

const hashBlocks, hashBlockSize = 4, 64 << 10

func newAsyncSHA1() *asyncSHA1 {
	a := &asyncSHA1{work: make(chan hashBlock, hashBlocks+2), sums: make(chan plumbing.Hash), free: make(chan []byte, hashBlocks)}
	for range hashBlocks {
		a.free <- make([]byte, hashBlockSize)
	}
	go func() {
		h := sha1.New()
		var sum, hdr []byte
		for blk := range a.work {
			if blk.header {
				hdr = append(hdr[:0], blk.typ.String()...)
				hdr = append(hdr, ' ')
				hdr = strconv.AppendInt(hdr, blk.size, 10)
				h.Write(append(hdr, 0))
				continue
			}
			if blk.end {
				var id plumbing.Hash
				sum = h.Sum(sum[:0])
				copy(id[:], sum)
				h.Reset()
				a.sums <- id
				continue
			}
			h.Write(blk.b)
			if blk.pooled {
				a.free <- blk.b[:cap(blk.b)]
			}
		}
	}()
	return a
}

// header starts an entry: git's "<type> <size>\x00" object header, made
// on the hashing goroutine (no allocation per entry).
func (a *asyncSHA1) header(t plumbing.ObjectType, size int64) {
	a.work <- hashBlock{header: true, typ: t, size: size}
}

// block returns a pool buffer to fill and pass to write.
func (a *asyncSHA1) block() []byte { return <-a.free }

func (a *asyncSHA1) write(b []byte, pooled bool) {
	if len(b) == 0 && !pooled {
		return
	}
	a.work <- hashBlock{b: b, pooled: pooled}
}

// sum waits for the entry's id.
func (a *asyncSHA1) sum() plumbing.Hash {
	a.work <- hashBlock{end: true}
	return <-a.sums
}

func (a *asyncSHA1) close() { close(a.work) }

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// packReader is the source of the bufio.Reader that indexPack reads the
// pack through: klauspost's flate has its fast decoding loop for a
// *bufio.Reader only, and zlib must not read past its stream, so the pack
// is not read in any other way. packReader keeps the bytes it handed to br
// until they are consumed and passes every consumed byte to the spool, the
// pack checksum and the current entry's CRC-32. The consumed position is
// what br got less what it still buffers; consumed bytes are handed on in
// batches: at each read by br and at each entry boundary.
type packReader struct {
	r     io.Reader
	br    *bufio.Reader // reads from the packReader
	buf   []byte
	mark  int // buf[mark:given] went to br and is not handed on yet
	given int // buf[given:end] is read from r and not yet given to br
	end   int
	base  int64 // pack offset of buf[0]
	spool *bufio.Writer
	sum   hash.Hash // nil while reading the trailer
	crc   hash.Hash32
	err   error // sticky read error of r, or the spool's error
}

// newPackReader buffers at most 320 KiB of the pack: br's 64 KiB, and the
// bytes read from r that br has not consumed yet.
func newPackReader(r io.Reader, spool *bufio.Writer) *packReader {
	p := &packReader{r: r, buf: make([]byte, 256<<10), spool: spool, sum: sha1.New(), crc: crc32.NewIEEE()}
	p.br = bufio.NewReaderSize(p, 64<<10)
	return p
}

// consumed is the end of the consumed bytes in buf.
func (p *packReader) consumed() int { return p.given - p.br.Buffered() }

func (p *packReader) offset() int64 { return p.base + int64(p.consumed()) }

// flush hands the consumed bytes on.
func (p *packReader) flush() error { return p.handOn(p.consumed()) }

// handOn passes buf[mark:to] to the checksums and the spool.
func (p *packReader) handOn(to int) error {
	b := p.buf[p.mark:to]
	p.mark = to
	if len(b) == 0 {
		return nil
	}
	if p.sum != nil {
		p.sum.Write(b)
	}
	p.crc.Write(b)
	if _, err := p.spool.Write(b); err != nil {
		return fmt.Errorf("spool pack: %w", err)
	}
	return nil
}

// Read gives br the next bytes of the pack. It is called by br only, when
// br needs more (so the bytes it still buffers are known at each call).
func (p *packReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if err := p.flush(); err != nil {
		p.err = err
		p.end = p.given // what br does not have yet is lost
		return 0, err
	}
	if p.given == p.end {
		// buf[mark:given] is still in br: keep it, read r after it.
		n := copy(p.buf, p.buf[p.mark:p.end])
		p.base += int64(p.mark)
		p.mark, p.given, p.end = 0, n, n
		for p.given == p.end {
			if p.err != nil {
				return 0, p.err
			}
			// An error (io.EOF) may come with the last bytes: it is kept
			// and r is not read again. A git server behind a connection
			// that stays open sends nothing after the end of its sideband
			// stream.
			n, err := p.r.Read(p.buf[p.end:])
			p.end += n
			if err != nil {
				p.err = err
			}
		}
	}
	n := copy(b, p.buf[p.given:p.end])
	p.given += n
	return n, nil
}

// entryHeader reads an entry's type and inflated size (git's varint: 3 type
// bits and 4 size bits, then 7 size bits per byte).
func (p *packReader) entryHeader() (byte, int64, error) {
	c, err := p.br.ReadByte()
	if err != nil {
		return 0, 0, unexpected(err)
	}
	typ := (c >> 4) & 7
	size := int64(c & 15)
	for shift := uint(4); c&0x80 != 0; shift += 7 {
		if shift > 56 {
			return 0, 0, errors.New("entry size overflows")
		}
		if c, err = p.br.ReadByte(); err != nil {
			return 0, 0, unexpected(err)
		}
		size |= int64(c&0x7f) << shift
	}
	return typ, size, nil
}
