package repo

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
)

// PackEntry locates one object in a written pack (what a .idx file records).
type PackEntry struct {
	ID     plumbing.Hash
	Offset uint64
	CRC32  uint32
}

// PackWriter writes a git packfile (version 2) as a stream: the header with
// the object count, each object as a whole (non-delta) zlib-compressed entry,
// and the trailing SHA-1 of the pack. There is no delta search: pullship's
// objects are content-defined chunks whose duplicates git's content
// addressing already removes. Memory stays at a few buffers, whatever the
// object sizes.
//
// Each object's content is hashed while it is written and must match the
// declared id and size; otherwise the pack is poisoned (every later call
// fails) so a receiver never gets a pack that lies about its objects.
type PackWriter struct {
	out     *bufio.Writer
	sum     hash.Hash // whole pack
	crc     hash.Hash32
	off     uint64
	want    uint32
	entries []PackEntry
	written uint32          // entries written
	record  func(PackEntry) // when set, gets each entry instead of entries
	zw      *zlib.Writer
	zstored *zlib.Writer // for Precompressed objects
	level   int
	buf     []byte
	err     error
	closed  bool
}

// NewPackWriter writes the pack header for count objects to w. Level is a
// compress/flate level; [DefaultPackLevel] is what pullship uses.
func NewPackWriter(w io.Writer, count uint32, level int) (*PackWriter, error) {
	return newPackWriter(w, count, level, nil)
}

// newPackWriter is NewPackWriter handing each entry to record (when set)
// instead of keeping it: a repack of a million objects keeps its entries
// in a mapped table, not in 32 MiB of heap.
func newPackWriter(w io.Writer, count uint32, level int, record func(PackEntry)) (*PackWriter, error) {
	pw := &PackWriter{
		record: record,
		out:    bufio.NewWriterSize(w, 256<<10),
		sum:    sha1.New(),
		crc:    crc32.NewIEEE(),
		want:   count,
		level:  level,
		buf:    make([]byte, 128<<10),
	}
	zw, err := zlib.NewWriterLevel(io.Discard, level)
	if err != nil {
		return nil, fmt.Errorf("pack writer: %w", err)
	}
	pw.zw = zw
	if record == nil {
		pw.entries = make([]PackEntry, 0, count)
	}
	var hdr [12]byte
	copy(hdr[:], "PACK")
	binary.BigEndian.PutUint32(hdr[4:], 2)
	binary.BigEndian.PutUint32(hdr[8:], count)
	if _, err := pw.Write(hdr[:]); err != nil {
		return nil, err
	}
	return pw, nil
}

// DefaultPackLevel is the zlib level of pullship packs: BestSpeed, because
// level 6 costs ~4× the CPU for a few percent on already dense layer data.
const DefaultPackLevel = zlib.BestSpeed

// Write implements io.Writer for the pack's own framing; it feeds the pack
// checksum and the current entry's CRC-32.
func (pw *PackWriter) Write(p []byte) (int, error) {
	if pw.err != nil {
		return 0, pw.err
	}
	n, err := pw.out.Write(p)
	pw.sum.Write(p[:n])
	pw.crc.Write(p[:n])
	pw.off += uint64(n)
	if err != nil {
		pw.err = err
	}
	return n, err
}

// check validates o as the next entry and returns its pack type code.
func (pw *PackWriter) check(o Object) (byte, error) {
	if pw.err != nil {
		return 0, pw.err
	}
	if pw.closed || pw.written >= pw.want {
		pw.err = fmt.Errorf("pack writer: object %s beyond the declared count %d", o.ID, pw.want)
		return 0, pw.err
	}
	var code byte
	switch o.Type {
	case plumbing.CommitObject, plumbing.TreeObject, plumbing.BlobObject, plumbing.TagObject:
		code = byte(o.Type)
	default:
		pw.err = fmt.Errorf("pack writer: object %s: unsupported type %v", o.ID, o.Type)
		return 0, pw.err
	}
	if o.Size < 0 {
		pw.err = fmt.Errorf("pack writer: object %s: negative size", o.ID)
		return 0, pw.err
	}
	return code, nil
}

// writeCompressed writes an entry whose content compressObject produced.
func (pw *PackWriter) writeCompressed(o Object, z []byte) error {
	start := pw.off
	if err := pw.entryHeader(o); err != nil {
		return err
	}
	if _, err := pw.Write(z); err != nil {
		return err
	}
	pw.add(PackEntry{ID: o.ID, Offset: start, CRC32: pw.crc.Sum32()})
	return nil
}

// add records a written entry.
func (pw *PackWriter) add(e PackEntry) {
	pw.written++
	if pw.record != nil {
		pw.record(e)
		return
	}
	pw.entries = append(pw.entries, e)
}

// entryHeader checks o and writes its entry header, starting the entry CRC.
func (pw *PackWriter) entryHeader(o Object) error {
	code, err := pw.check(o)
	if err != nil {
		return err
	}
	pw.crc.Reset()

	// Entry header: type and size, little-endian base-128 after 4 size bits.
	var hdr [16]byte
	size := uint64(o.Size)
	hdr[0] = code<<4 | byte(size&0x0f)
	size >>= 4
	n := 1
	for size != 0 {
		hdr[n-1] |= 0x80
		hdr[n] = byte(size & 0x7f)
		size >>= 7
		n++
	}
	_, err = pw.Write(hdr[:n])
	return err
}

// WriteObject writes o's content, read from r, as the next entry. r must
// yield exactly o.Size bytes hashing to o.ID.
func (pw *PackWriter) WriteObject(o Object, r io.Reader) error {
	start := pw.off
	if err := pw.entryHeader(o); err != nil {
		return err
	}
	idh := sha1.New()
	writeObjectHeader(idh, o.Type, o.Size)
	zw := pw.zw
	if o.Precompressed {
		if pw.zstored == nil {
			pw.zstored, _ = zlib.NewWriterLevel(io.Discard, zlib.NoCompression)
		}
		zw = pw.zstored
	}
	zw.Reset(pw)
	got, err := io.CopyBuffer(io.MultiWriter(zw, idh), io.LimitReader(r, o.Size+1), pw.buf)
	if err != nil {
		if pw.err == nil {
			pw.err = fmt.Errorf("pack writer: object %s: %w", o.ID, err)
		}
		return pw.err
	}
	if got != o.Size {
		pw.err = fmt.Errorf("pack writer: object %s: %w", o.ID, &SizeMismatchError{Declared: o.Size, Got: got})
		return pw.err
	}
	if err := zw.Close(); err != nil {
		return pw.fail(err)
	}
	var id plumbing.Hash
	copy(id[:], idh.Sum(nil))
	if id != o.ID {
		pw.err = fmt.Errorf("pack writer: %w", &ObjectMismatchError{Declared: o.ID, Got: id})
		return pw.err
	}
	pw.add(PackEntry{ID: o.ID, Offset: start, CRC32: pw.crc.Sum32()})
	return nil
}

func (pw *PackWriter) fail(err error) error {
	if pw.err == nil {
		pw.err = fmt.Errorf("pack writer: %w", err)
	}
	return pw.err
}

// Close checks that the declared number of objects was written, writes the
// trailing checksum and flushes. It returns the pack checksum (which names
// the pack file on disk).
func (pw *PackWriter) Close() (plumbing.Hash, error) {
	if pw.err != nil {
		return plumbing.ZeroHash, pw.err
	}
	if pw.closed {
		return plumbing.ZeroHash, errors.New("pack writer: closed twice")
	}
	pw.closed = true
	if pw.written != pw.want {
		return plumbing.ZeroHash, pw.fail(fmt.Errorf("wrote %d objects, declared %d", pw.written, pw.want))
	}
	var sum plumbing.Hash
	copy(sum[:], pw.sum.Sum(nil))
	if _, err := pw.out.Write(sum[:]); err != nil {
		return plumbing.ZeroHash, pw.fail(err)
	}
	if err := pw.out.Flush(); err != nil {
		return plumbing.ZeroHash, pw.fail(err)
	}
	return sum, nil
}

// Entries returns where each object landed, in pack order.
func (pw *PackWriter) Entries() []PackEntry { return pw.entries }

// ObjectMismatchError reports content whose git object id is not the one
// declared: the bytes were altered (a corrupted or malicious store).
type ObjectMismatchError struct {
	Declared, Got plumbing.Hash
}

func (e *ObjectMismatchError) Error() string {
	return fmt.Sprintf("object declared as %s hashes to %s", e.Declared, e.Got)
}

// SizeMismatchError reports content whose length differs from the declared size.
type SizeMismatchError struct {
	Declared, Got int64 // Got is capped at Declared+1
}

func (e *SizeMismatchError) Error() string {
	if e.Got > e.Declared {
		return fmt.Sprintf("content longer than the declared %d bytes", e.Declared)
	}
	return fmt.Sprintf("content is %d bytes, declared %d", e.Got, e.Declared)
}

// WritePack writes every object of s to w as one pack and returns the pack
// checksum and the entries. It stops early when ctx is done.
//
// Objects are compressed by up to GOMAXPROCS workers (at most 4) into
// buffers and written in order, so memory holds at most about twice as many
// objects as there are workers; a stream whose source is not safe for
// concurrent reads (a Store) is written by one goroutine, streaming.
func WritePack(ctx context.Context, w io.Writer, s *ObjectStream) (plumbing.Hash, []PackEntry, error) {
	objs := s.Objects()
	pw, err := NewPackWriter(w, uint32(len(objs)), DefaultPackLevel)
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	workers := min(runtime.GOMAXPROCS(0), 4)
	if s.serial || workers < 2 || len(objs) < 2 {
		for _, o := range objs {
			if err := ctx.Err(); err != nil {
				return plumbing.ZeroHash, nil, err
			}
			rc, err := s.Open(o)
			if err != nil {
				return plumbing.ZeroHash, nil, fmt.Errorf("open object %s: %w", o.ID, err)
			}
			err = pw.WriteObject(o, rc)
			rc.Close()
			if err != nil {
				return plumbing.ZeroHash, nil, err
			}
		}
	} else if err := pw.writeParallel(ctx, s, workers); err != nil {
		return plumbing.ZeroHash, nil, err
	}
	sum, err := pw.Close()
	return sum, pw.Entries(), err
}

type compressed struct {
	o   Object
	buf *bytes.Buffer
	err error
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (pw *PackWriter) writeParallel(ctx context.Context, s *ObjectStream, workers int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	queue := make(chan chan compressed, workers)
	sem := make(chan struct{}, workers)
	go func() {
		defer close(queue)
		for _, o := range s.Objects() {
			ch := make(chan compressed, 1)
			select {
			case queue <- ch:
			case <-ctx.Done():
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				ch <- compressed{o: o, err: ctx.Err()}
				return
			}
			go func() {
				defer func() { <-sem }()
				ch <- compressObject(s, o, pw.level)
			}()
		}
	}()
	var err error
	for ch := range queue {
		c := <-ch
		if err == nil {
			err = c.err
			if err == nil {
				err = pw.writeCompressed(c.o, c.buf.Bytes())
			}
			if err != nil {
				cancel()
			}
		}
		if c.buf != nil {
			c.buf.Reset()
			bufPool.Put(c.buf)
		}
	}
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// compressObject reads o, checks its size and id, and returns its zlib stream.
func compressObject(s *ObjectStream, o Object, level int) compressed {
	rc, err := s.Open(o)
	if err != nil {
		return compressed{o: o, err: fmt.Errorf("open object %s: %w", o.ID, err)}
	}
	defer rc.Close()
	buf := bufPool.Get().(*bytes.Buffer)
	// Deflate's worst case adds ~5 bytes per 16 KiB block: growing once to
	// that bound avoids the doubling that would waste up to half a buffer.
	buf.Grow(int(o.Size + o.Size>>12 + 64))
	if o.Precompressed {
		level = zlib.NoCompression
	}
	zw, _ := zlib.NewWriterLevel(buf, level)
	idh := sha1.New()
	writeObjectHeader(idh, o.Type, o.Size)
	got, err := io.Copy(io.MultiWriter(zw, idh), io.LimitReader(rc, o.Size+1))
	if err == nil {
		err = zw.Close()
	}
	if err == nil && got != o.Size {
		err = &SizeMismatchError{Declared: o.Size, Got: got}
	}
	if err == nil {
		var id plumbing.Hash
		copy(id[:], idh.Sum(nil))
		if id != o.ID {
			err = &ObjectMismatchError{Declared: o.ID, Got: id}
		}
	}
	if err != nil {
		buf.Reset()
		bufPool.Put(buf)
		return compressed{o: o, err: fmt.Errorf("pack writer: object %s: %w", o.ID, err)}
	}
	return compressed{o: o, buf: buf}
}
