package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"

	"github.com/vbatts/tar-split/archive/tar"

	"github.com/pullship/pullship/bundler/shared/chunks"
	"github.com/pullship/pullship/schema"
)

// Split layers (docs/format.md, "Split layers"): a layer tar is read with
// tar-split's archive/tar, which hands out the raw bytes of every header,
// extended header and padding block as it parses them (RawAccounting), the
// way containers/storage keeps layers it can rebuild byte for byte. The
// contents of the layer's files make one stream, chunked as any file is;
// the rest makes the header stream (chunks.AppendRecord), spooled to a
// temporary file and chunked after. A layer whose pieces do not hash back
// to the layer (a sparse file, a tar this reader cannot parse) is chunked
// whole, as before split layers.

// errNoSplit says a layer is chunked whole instead.
var errNoSplit = errors.New("layer not split")

// splitter is an io.Reader of the contents of a layer tar's files; as it
// goes it writes the header stream to hw and hashes what the records
// rebuild (rebuilt), to be compared with the layer's own sha256.
type splitter struct {
	tr      *tar.Reader
	raw     io.Reader // the layer, as tr reads it
	hw      *bufio.Writer
	rec     []byte // a record being written
	pending []byte // raw bytes not yet in a record
	left    int64  // contents left of the current file
	done    bool
	rebuilt hash.Hash
}

// Read reads the contents of the files, in order.
func (s *splitter) Read(p []byte) (int, error) {
	for s.left == 0 {
		if s.done {
			return 0, io.EOF
		}
		if err := s.advance(); err != nil {
			return 0, err
		}
	}
	n, err := s.tr.Read(p[:min(int64(len(p)), s.left)])
	s.rebuilt.Write(p[:n])
	s.left -= int64(n)
	switch {
	case err == io.EOF && s.left > 0:
		return n, fmt.Errorf("%w: contents end early", errNoSplit)
	case err == io.EOF:
		err = nil
	}
	if s.left == 0 {
		s.pending = append(s.pending, s.tr.RawBytes()...)
	}
	return n, err
}

// advance reads the next header; at the end of the archive it takes what
// follows too.
func (s *splitter) advance() error {
	hdr, err := s.tr.Next()
	s.pending = append(s.pending, s.tr.RawBytes()...)
	if err == io.EOF {
		if err := s.flush(0); err != nil {
			return err
		}
		buf := make([]byte, chunks.MaxRecordRaw)
		for {
			n, err := io.ReadFull(s.raw, buf)
			s.pending = append(s.pending, buf[:n]...)
			if ferr := s.flush(0); ferr != nil {
				return ferr
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				return err
			}
		}
		s.done = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errNoSplit, err)
	}
	if hdr.Typeflag == tar.TypeGNUSparse || hasSparse(hdr) {
		return fmt.Errorf("%w: sparse file %s", errNoSplit, hdr.Name)
	}
	if hdr.Size > 0 {
		if err := s.flush(hdr.Size); err != nil {
			return err
		}
		s.left = hdr.Size
	} else if len(s.pending) >= chunks.MaxRecordRaw {
		return s.flush(0)
	}
	return nil
}

func hasSparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// flush writes the pending raw bytes as records, the last followed by a
// contents length of content.
func (s *splitter) flush(content int64) error {
	if len(s.pending) == 0 && content == 0 {
		return nil
	}
	raw := s.pending
	for {
		n := min(len(raw), chunks.MaxRecordRaw)
		m := int64(0)
		if n == len(raw) {
			m = content
		}
		s.rec = chunks.AppendRecord(s.rec[:0], raw[:n], m)
		s.rebuilt.Write(raw[:n])
		if _, err := s.hw.Write(s.rec); err != nil {
			return err
		}
		raw = raw[n:]
		if len(raw) == 0 {
			break
		}
	}
	s.pending = s.pending[:0]
	return nil
}

// countingReader counts and hashes what is read through it.
type countingReader struct {
	r io.Reader
	n int64
	h hash.Hash
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.h.Write(p[:n])
	return n, err
}

// scanSplit chunks the layer e as a split layer: the contents' chunks, the
// header stream's chunks and the layer's sha256. It fails with errNoSplit
// when the layer does not split back to itself; progress has then been
// told of the bytes read until then.
func (s *scanner) scanSplit(ctx context.Context, e entry, progress func(int64)) (content, headers []schema.Chunk, sum string, err error) {
	ra, err := e.open()
	if err != nil {
		return nil, nil, "", err
	}
	defer ra.Close()
	hf, err := os.CreateTemp("", "pullship-headers-*")
	if err != nil {
		return nil, nil, "", fmt.Errorf("header stream spool: %w", err)
	}
	os.Remove(hf.Name())
	defer hf.Close()
	s.fsh.Reset()
	cr := &countingReader{r: io.NewSectionReader(ra, 0, e.Size), h: s.fsh}
	sp := &splitter{raw: cr, hw: bufio.NewWriterSize(hf, 256<<10), rebuilt: sha256.New()}
	sp.tr = tar.NewReader(cr)
	sp.tr.RawAccounting = true
	var reported int64
	content, n, err := s.chunkStream(ctx, sp, nil, func(int64) {
		progress(cr.n - reported)
		reported = cr.n
	})
	if err != nil {
		return nil, nil, "", err
	}
	if !sp.done || sp.left != 0 {
		return nil, nil, "", fmt.Errorf("%w: read %d bytes of contents, the archive did not end", errNoSplit, n)
	}
	if err := sp.hw.Flush(); err != nil {
		return nil, nil, "", fmt.Errorf("header stream spool: %w", err)
	}
	progress(cr.n - reported)
	sum = hex.EncodeToString(s.fsh.Sum(nil))
	if cr.n != e.Size || hex.EncodeToString(sp.rebuilt.Sum(nil)) != sum {
		return nil, nil, "", fmt.Errorf("%w: its pieces do not rebuild it", errNoSplit)
	}
	hsize, err := hf.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, nil, "", err
	}
	headers, _, err = s.chunkStream(ctx, io.NewSectionReader(hf, 0, hsize), nil, func(int64) {})
	if err != nil {
		return nil, nil, "", fmt.Errorf("header stream: %w", err)
	}
	return content, headers, sum, nil
}
