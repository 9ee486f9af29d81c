package image

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/pullship/pullship/bundler/shared/chunks"
	"github.com/pullship/pullship/schema"
	"github.com/restic/chunker"
)

// Pol is the chunker's polynomial. It is fixed (never random per run) so that
// the same bytes always cut into the same chunks, across runs, machines and
// releases: that is what makes chunks deduplicate.
const Pol = chunker.Pol(0x3DA3358B4DC173)

// Chunk sizes: restic's defaults (MinSize 512 KiB, ~1 MiB average, MaxSize
// 8 MiB, which is schema.MaxImageChunk).
const (
	MinChunk = chunker.MinSize
	MaxChunk = chunker.MaxSize
)

// Progress is called with the bytes processed so far and the total to
// process, after each chunk.
type Progress func(done, total int64)

// Option configures [Open] and [Scan].
type Option func(*options)

type options struct {
	progress Progress
}

// WithProgress reports progress to fn (e.g. to draw a progress bar).
func WithProgress(fn Progress) Option { return func(o *options) { o.progress = fn } }

func newOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if o.progress == nil {
		o.progress = func(int64, int64) {}
	}
	return o
}

// Reader reads one image from a [Source]: [Reader.Scan] indexes it and
// [Reader.Chunks] delivers chunk contents. Close it to release the source.
type Reader struct {
	src    Source
	fs     *fileset
	layout *layout
	idx    *schema.ImageIndex
	opts   options
	buf    []byte     // one chunk, reused
	blobs  *blobSpool // the chunk blobs Scan encoded
	known  map[string]schema.Chunk
}

// Know gives [Reader.Scan] chunks that an earlier index lists and whose
// blobs the destination holds: a chunk with the same sha256 and size keeps
// that blob and is not encoded again (a small change to a large image then
// costs little more than hashing it). Only zstd-encoded chunks are taken.
func (r *Reader) Know(chunks []schema.Chunk) {
	r.known = map[string]schema.Chunk{}
	for _, c := range chunks {
		if c.Encoded() {
			r.known[c.SHA256] = c
		}
	}
}

// Open opens src and reads its structure (manifest.json, config), without
// reading layers yet.
func Open(ctx context.Context, src Source, opts ...Option) (*Reader, error) {
	fs, err := src.open(ctx)
	if err != nil {
		return nil, err
	}
	l, fs2, err := readLayout(fs)
	if err != nil {
		fs.Close()
		return nil, fmt.Errorf("image %s: %w", src, err)
	}
	planFirst(fs2.entries, l.config)
	return &Reader{src: src, fs: fs2, layout: l, opts: newOptions(opts)}, nil
}

// planFirst moves the files an engine reads to plan a load to the front, in
// this order: manifest.json, index.json, the config; the rest keep theirs:
// the index lists entries in the order agents rebuild the stream and chunks
// are ranked for git servers to send, so an agent learns the layers' order
// and diff_ids before their bytes arrive and can load each as it comes.
func planFirst(entries []entry, config string) {
	rank := func(e entry) int {
		if e.Type == schema.EntryFile {
			switch e.Path {
			case "manifest.json":
				return 0
			case "index.json":
				return 1
			case config:
				return 2
			}
		}
		return 3
	}
	slices.SortStableFunc(entries, func(a, b entry) int { return rank(a) - rank(b) })
}

// Close releases the source (and deletes a spooled engine export and the
// encoded chunk blobs).
func (r *Reader) Close() error {
	if r.blobs != nil {
		r.blobs.close()
	}
	return r.fs.Close()
}

// Scan reads src once and returns its index; see [Reader.Scan].
func Scan(ctx context.Context, src Source, opts ...Option) (*schema.ImageIndex, error) {
	r, err := Open(ctx, src, opts...)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Scan(ctx)
}

// Scan reads every file of the image once, chunks it and hashes it, checks
// the image's structure (config sha256 = image ID; layer sha256, inflated if
// gzip-compressed, = the config's diff_ids; blobs/sha256/<hex> files hash to
// <hex>) and returns the validated index. Its Name is derived from the first
// repo tag ("registry/org/app:1" → "app"), or "image-<12 hex>" if untagged;
// callers set the name the release uses.
func (r *Reader) Scan(ctx context.Context) (*schema.ImageIndex, error) {
	idx := &schema.ImageIndex{Format: schema.ImageFormat, RepoTags: r.layout.repoTags, ChunkEncoding: schema.ChunkZstd}
	layers := map[string]bool{}
	for _, l := range r.layout.layers {
		layers[l.path] = true
	}
	inflated := map[string]string{}
	var total, done int64
	for _, e := range r.fs.entries {
		total += e.Size
	}
	if total > schema.MaxImageSize {
		return nil, fmt.Errorf("image %s: %d bytes, more than the %d allowed", r.src, total, int64(schema.MaxImageSize))
	}
	sc := newScanner()
	sc.known = r.known
	var err error
	if sc.blobs, err = newBlobSpool(); err != nil {
		return nil, fmt.Errorf("image %s: %w", r.src, err)
	}
	defer func() {
		if sc.blobs != nil {
			sc.blobs.close()
		}
	}()
	for _, e := range r.fs.entries {
		ie := e.ImageEntry
		if e.Type == schema.EntryFile {
			var err error
			ie.Chunks, ie.Headers, ie.SHA256, err = sc.scanFile(ctx, e, layers[e.Path], inflated, func(n int64) {
				done += n
				r.opts.progress(done, total)
			})
			if err != nil {
				return nil, fmt.Errorf("image %s: %s: %w", r.src, e.Path, err)
			}
		}
		if ie.Split() {
			idx.Version = schema.ImageIndexVersion
		}
		idx.Entries = append(idx.Entries, ie)
	}
	if err := r.layout.check(idx, inflated); err != nil {
		return nil, fmt.Errorf("image %s: %w", r.src, err)
	}
	idx.Name = defaultName(idx)
	if err := idx.Validate(); err != nil {
		return nil, fmt.Errorf("image %s: %w", r.src, err)
	}
	r.idx = idx
	if r.blobs != nil {
		r.blobs.close()
	}
	r.blobs, sc.blobs = sc.blobs, nil
	return idx, nil
}

func defaultName(idx *schema.ImageIndex) string {
	if len(idx.RepoTags) > 0 {
		n := idx.RepoTags[0]
		if i := strings.LastIndexByte(n, ':'); i > strings.LastIndexByte(n, '/') {
			n = n[:i]
		}
		n = strings.ToLower(path.Base(n))
		if len(n) > 64 {
			n = n[:64]
		}
		tmp := *idx
		tmp.Name = n
		if tmp.Validate() == nil {
			return n
		}
	}
	return "image-" + strings.TrimPrefix(idx.Digest, "sha256:")[:12]
}

// scanner holds the buffers of the hashing pass, reused for every file.
type scanner struct {
	ch       *chunker.Chunker
	bufs     [2][]byte
	sha, fsh hash.Hash
	blobs    *blobSpool
	known    map[string]schema.Chunk
}

func newScanner() *scanner {
	s := &scanner{
		ch:   chunker.NewWithBoundaries(nil, Pol, MinChunk, MaxChunk),
		bufs: [2][]byte{make([]byte, MaxChunk), make([]byte, MaxChunk)},
		sha:  sha256.New(),
		fsh:  sha256.New(),
	}
	return s
}

// scanFile chunks one file, hashing each byte once per digest: chunk
// sha256, whole-file sha256, and for a gzip layer the sha256 of its inflated
// stream (its diff_id); the chunks' blobs are encoded in the background. An
// uncompressed layer is split (see scanSplit): then headers holds the
// chunks of its header stream and chunks those of its files' contents.
func (s *scanner) scanFile(ctx context.Context, e entry, layer bool, inflated map[string]string, progress func(int64)) (chunks, headers []schema.Chunk, sum string, err error) {
	ra, err := e.open()
	if err != nil {
		return nil, nil, "", err
	}
	defer ra.Close()
	var gz *gzipHasher
	if layer {
		var magic [2]byte
		if n, _ := ra.ReadAt(magic[:], 0); n == 2 && magic == [2]byte{0x1f, 0x8b} {
			gz = newGzipHasher()
			defer gz.abort()
		} else {
			var told int64
			chunks, headers, sum, err = s.scanSplit(ctx, e, func(n int64) { told += n; progress(n) })
			if !errors.Is(err, errNoSplit) {
				return chunks, headers, sum, err
			}
			// Chunked whole: progress resumes where the split left it.
			inner := progress
			progress = func(n int64) {
				skip := min(n, told)
				told -= skip
				if n > skip {
					inner(n - skip)
				}
			}
		}
	}
	s.fsh.Reset()
	chunks, n, err := s.chunkStream(ctx, io.NewSectionReader(ra, 0, e.Size), func(data []byte) {
		s.fsh.Write(data)
		if gz != nil {
			gz.Write(data)
		}
	}, progress)
	if err != nil {
		return nil, nil, "", err
	}
	if n != e.Size {
		return nil, nil, "", fmt.Errorf("read %d bytes, want %d (file changed or truncated)", n, e.Size)
	}
	if gz != nil {
		sum, err := gz.sum()
		if err != nil {
			return nil, nil, "", fmt.Errorf("gzip layer: %w", err)
		}
		inflated[e.Path] = sum
	}
	return chunks, nil, hex.EncodeToString(s.fsh.Sum(nil)), nil
}

// chunkStream cuts r into chunks and hashes each, passing its bytes to
// onData (if set) in order; the chunks' blobs are encoded in the
// background. It returns the chunks and the bytes read.
func (s *scanner) chunkStream(ctx context.Context, r io.Reader, onData func([]byte), progress func(int64)) ([]schema.Chunk, int64, error) {
	s.ch.ResetWithBoundaries(r, Pol, MinChunk, MaxChunk)
	// Two stages on two buffers: while this goroutine finds the next cut,
	// another hashes the previous chunk (hashing is over half the work).
	var chunks []schema.Chunk
	free := make(chan []byte, len(s.bufs))
	for _, b := range s.bufs {
		free <- b
	}
	work := make(chan []byte, len(s.bufs))
	hashed := make(chan struct{})
	var blobs []*spooledBlob // chunks[i]'s blob
	go func() {
		defer close(hashed)
		for data := range work {
			var c schema.Chunk
			s.chunk(data, &c)
			chunks = append(chunks, c)
			if k, ok := s.known[c.SHA256]; ok && k.Size == c.Size {
				blobs = append(blobs, knownBlob(k))
			} else {
				blobs = append(blobs, s.blobs.add(data))
			}
			if onData != nil {
				onData(data)
			}
			free <- data
		}
	}()
	var n int64
	var err error
	for {
		if err = ctx.Err(); err != nil {
			break
		}
		var c chunker.Chunk
		c, err = s.ch.Next(<-free)
		if err == io.EOF {
			err = nil
			break
		}
		if err != nil {
			break
		}
		work <- c.Data
		n += int64(len(c.Data))
		progress(int64(len(c.Data)))
	}
	close(work)
	<-hashed
	for i, b := range blobs {
		<-b.done
		if b.err != nil && err == nil {
			err = b.err
		}
		chunks[i].Blob, chunks[i].BlobSize = b.id, b.size
	}
	if err != nil {
		return nil, n, err
	}
	return chunks, n, nil
}

// chunk hashes a chunk; its blob is encoded in the background.
func (s *scanner) chunk(data []byte, c *schema.Chunk) {
	s.sha.Reset()
	s.sha.Write(data)
	*c = schema.Chunk{SHA256: hex.EncodeToString(s.sha.Sum(nil)), Size: int64(len(data))}
}

// gzipHasher inflates what is written to it in a goroutine and hashes the
// result, in constant memory.
type gzipHasher struct {
	pw     *io.PipeWriter
	done   chan struct{}
	digest string
	err    error
}

func newGzipHasher() *gzipHasher {
	pr, pw := io.Pipe()
	g := &gzipHasher{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(g.done)
		zr, err := gzip.NewReader(pr)
		if err == nil {
			h := sha256.New()
			if _, err = io.Copy(h, zr); err == nil {
				g.digest = hex.EncodeToString(h.Sum(nil))
			}
		}
		g.err = err
		pr.CloseWithError(errors.New("gzip stream ended early"))
	}()
	return g
}

// Write feeds compressed bytes; after an inflate error it discards them and
// sum reports the error.
func (g *gzipHasher) Write(p []byte) {
	g.pw.Write(p) //nolint:errcheck // the inflater's error is reported by sum
}

func (g *gzipHasher) sum() (string, error) {
	g.pw.Close()
	<-g.done
	return g.digest, g.err
}

func (g *gzipHasher) abort() {
	g.pw.CloseWithError(errors.New("aborted"))
	<-g.done
}

// Chunks delivers, in stream order, the content of every distinct chunk of
// the scanned index whose git blob id want accepts (nil: all), decoded from
// the blobs the scan encoded and checked against the index. A chunk Scan
// was told it knows ([Reader.Know]) has no blob here and is an error if
// wanted. data is valid only during the call to fn.
func (r *Reader) Chunks(ctx context.Context, want func(blob string) bool, fn func(c schema.Chunk, data []byte) error) error {
	if r.idx == nil {
		return fmt.Errorf("image %s: Chunks called before a successful Scan", r.src)
	}
	if r.buf == nil {
		r.buf = make([]byte, MaxChunk+1)
	}
	total := r.idx.StoredSize()
	var done int64
	sent := map[string]bool{}
	h := sha256.New()
	for _, ie := range r.idx.Entries {
		for _, c := range ie.StreamChunks() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if sent[c.Blob] || want != nil && !want(c.Blob) {
				continue
			}
			sent[c.Blob] = true
			rc, err := r.OpenChunk(c.Blob)
			if err == nil {
				rc, err = chunks.Decode(rc, c)
			}
			if err != nil {
				return fmt.Errorf("image %s: %s: chunk %s: %w", r.src, ie.Path, short(c.SHA256), err)
			}
			n, err := io.ReadFull(rc, r.buf[:c.Size+1])
			rc.Close()
			data := r.buf[:n]
			h.Reset()
			h.Write(data)
			if int64(n) != c.Size || hex.EncodeToString(h.Sum(nil)) != c.SHA256 {
				return fmt.Errorf("image %s: %s: chunk %s: its blob does not hold it (%v)", r.src, ie.Path, short(c.SHA256), err)
			}
			if err := fn(c, data); err != nil {
				return err
			}
			done += c.StoredSize()
			r.opts.progress(done, total)
		}
	}
	return nil
}

func short(hexs string) string {
	if len(hexs) > 12 {
		return hexs[:12] + "…"
	}
	return hexs
}
