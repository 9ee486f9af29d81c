package chunks

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/pullship/pullship/bundler/shared/atomicfile"

	"github.com/pullship/pullship/schema"
)

// Source gives the bytes of a chunk; [Rebuild] verifies them. The agent
// reads them from git blobs, tests from a [Dir] directory.
type Source interface {
	Open(c schema.Chunk) (io.ReadCloser, error)
}

// Errors a [*Error] wraps; each is a refusal (schema.ErrRefused).
var (
	ErrDigest = schema.Refused(errors.New("sha256 mismatch"))
	ErrShort  = schema.Refused(errors.New("shorter than declared"))
	ErrLong   = schema.Refused(errors.New("data beyond the declared length"))
)

// Error says which chunk of which file failed.
type Error struct {
	Path  string // the file the chunk belongs to
	Chunk schema.Chunk
	Err   error // ErrDigest, ErrShort, ErrLong or an I/O error
}

func (e *Error) Error() string {
	return fmt.Sprintf("chunk %s of %s: %v", e.Chunk.SHA256[:min(12, len(e.Chunk.SHA256))], e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// epoch is the modification time of every rebuilt entry: the index does not
// record times, and docker load ignores them.
var epoch = time.Unix(0, 0).UTC()

// Progress is told the bytes rebuilt so far of total.
type Progress func(done, total int64)

// Rebuild writes to w the `docker save` stream idx describes, reading each
// chunk from src. Every chunk is read whole (at most 8 MiB) and checked
// against its declared length and sha256 before any of its bytes are
// written, so w never receives unverified data; the first bad chunk stops
// the stream with a [*Error]. Tar headers are normalised (mtime 0,
// uid/gid 0, no user names): the files are exact, the headers deterministic.
// A split layer is reassembled from its header stream and its contents
// (see [Assemble]) and its sha256 checked at its end. Memory: two chunks.
// A nil progress is not told anything.
func Rebuild(ctx context.Context, idx *schema.ImageIndex, src Source, w io.Writer, progress Progress) error {
	return RebuildSkipping(ctx, idx, src, w, progress, nil)
}

// RebuildSkipping is [Rebuild], but leaves out the files skip names: before
// each file's entry it asks skip for the file's path, and when skip says
// so, writes no entry for it and reads none of its chunks (the agent's
// engine needs no layer it holds already). A nil skip leaves nothing out.
func RebuildSkipping(ctx context.Context, idx *schema.ImageIndex, src Source, w io.Writer, progress Progress, skip func(path string) bool) error {
	if err := idx.Validate(); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	total := idx.TotalSize()
	var done int64
	content := &chunkReader{ctx: ctx, src: src, h: sha256.New()}
	headers := &chunkReader{ctx: ctx, src: src, h: content.h}
	tw := tar.NewWriter(w)
	for _, e := range idx.Entries {
		if e.Type == schema.EntryFile && skip != nil && skip(e.Path) {
			done += e.Size
			progress(done, total)
			continue
		}
		hdr := &tar.Header{Name: e.Path, Mode: e.Mode, ModTime: epoch}
		switch e.Type {
		case schema.EntryFile:
			hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
		case schema.EntryDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, e.Path+"/"
		case schema.EntrySymlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Linkname
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("rebuild %s: %w", e.Path, err)
		}
		count := func(n int64) { done += n; progress(done, total) }
		if !e.Split() {
			content.reset(e.Path, e.Chunks, count)
			for {
				data, err := content.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
				if _, err := tw.Write(data); err != nil {
					return fmt.Errorf("rebuild %s: %w", e.Path, err)
				}
			}
			continue
		}
		content.reset(e.Path, e.Chunks, nil)
		headers.reset(e.Path, e.Headers, nil)
		if err := assemble(tw, &e, headers, content, count); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	return nil
}

// chunkReader reads a list of chunks in order, each verified whole before
// any of its bytes are handed out.
type chunkReader struct {
	ctx    context.Context
	src    Source
	h      hasher
	path   string
	list   []schema.Chunk
	buf    []byte
	cur    []byte // what is left of the current chunk
	onRead func(int64)
}

type hasher interface {
	Reset()
	Write([]byte) (int, error)
	Sum([]byte) []byte
}

func (r *chunkReader) reset(path string, list []schema.Chunk, onRead func(int64)) {
	r.path, r.list, r.cur, r.onRead = path, list, nil, onRead
}

// next returns the rest of the current chunk, or the next chunk whole.
func (r *chunkReader) next() ([]byte, error) {
	if len(r.cur) > 0 {
		data := r.cur
		r.cur = nil
		return data, nil
	}
	if len(r.list) == 0 {
		return nil, io.EOF
	}
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	c := r.list[0]
	r.list = r.list[1:]
	if int64(cap(r.buf)) < c.Size+1 {
		r.buf = make([]byte, c.Size+1, max(c.Size+1, 1<<20))
	}
	data, err := readChunk(r.src, c, r.buf[:c.Size+1], r.h)
	if err != nil {
		return nil, &Error{Path: r.path, Chunk: c, Err: err}
	}
	if r.onRead != nil {
		r.onRead(c.Size)
	}
	return data, nil
}

// take returns up to n bytes of the chunks (fewer at a chunk's end).
func (r *chunkReader) take(n int64) ([]byte, error) {
	if len(r.cur) == 0 {
		data, err := r.next()
		if err != nil {
			return nil, err
		}
		r.cur = data
	}
	k := min(n, int64(len(r.cur)))
	data := r.cur[:k]
	r.cur = r.cur[k:]
	return data, nil
}

// ReadByte reads one byte of the chunks (for binary.ReadUvarint).
func (r *chunkReader) ReadByte() (byte, error) {
	data, err := r.take(1)
	if err != nil {
		return 0, err
	}
	return data[0], nil
}

// readChunk reads chunk c into buf (len c.Size+1, to see data beyond the
// declared length) and verifies it.
func readChunk(chunks Source, c schema.Chunk, buf []byte, h hasher) ([]byte, error) {
	rc, err := chunks.Open(c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, buf)
	switch {
	case err == nil:
		return nil, ErrLong
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
	default:
		return nil, err
	}
	if int64(n) < c.Size {
		return nil, fmt.Errorf("%w: %d of %d bytes", ErrShort, n, c.Size)
	}
	data := buf[:n]
	h.Reset()
	h.Write(data)
	if hex.EncodeToString(h.Sum(nil)) != c.SHA256 {
		return nil, ErrDigest
	}
	return data, nil
}

// Dir is a directory holding chunks as files named by their sha256
// hex: a [Source] for tests and tools.
type Dir string

// Open opens the file of chunk c.
func (d Dir) Open(c schema.Chunk) (io.ReadCloser, error) {
	return os.Open(filepath.Join(string(d), c.SHA256))
}

// Put stores a chunk's bytes (as the release side's image reader delivers them).
func (d Dir) Put(c schema.Chunk, data []byte) error {
	return atomicfile.WriteFile(filepath.Join(string(d), c.SHA256), bytes.NewReader(data), 0o644)
}
