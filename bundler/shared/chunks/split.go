package chunks

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/pullship/pullship/schema"
)

// A split layer (docs/format.md, "Split layers") is stored as two chunked
// streams: the contents of its files, one after the other, and its header
// stream, which holds every other byte of the layer tar (headers, extended
// headers, padding, the end-of-archive blocks and anything after them) cut
// into records. Each record is a uvarint n, n bytes copied to the layer as
// they are, and a uvarint m, the length of the next piece of the contents
// stream. The layer is the records' bytes and contents in turn. Tar headers
// change with every mtime; contents do not: the contents chunks of a layer
// rebuilt with new timestamps stay the same, only its header stream is new.

// MaxRecordRaw is the most raw bytes the release side puts in one record
// (longer runs, such as junk after the end-of-archive blocks, take several).
const MaxRecordRaw = 1 << 20

// AppendRecord appends a header-stream record to dst: raw, then the length
// of the contents that follow it in the layer.
func AppendRecord(dst, raw []byte, content int64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(raw)))
	dst = append(dst, raw...)
	return binary.AppendUvarint(dst, uint64(content))
}

// ErrHeaders wraps a split layer's header stream that does not rebuild
// the layer its entry declares (it is refused: schema.ErrRefused).
var ErrHeaders = schema.Refused(errors.New("bad header stream"))

// assemble writes the split layer e from its header stream and contents,
// each chunk verified before use. It refuses, before writing them, bytes
// beyond the declared size; at the end, a stream that ended inside a
// record, contents left over or missing, a layer shorter than declared or
// whose sha256 is not the entry's. The header stream's bytes are copied as
// they come: memory is the two chunk buffers.
func assemble(w io.Writer, e *schema.ImageEntry, headers, content *chunkReader, onWrite func(int64)) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("split layer %s: %w: %s", e.Path, ErrHeaders, fmt.Sprintf(format, a...))
	}
	lh := sha256.New()
	var written int64
	contentLeft := e.ContentSize()
	// copyN copies n bytes of r to w; short says what a missing byte means.
	copyN := func(r *chunkReader, n int64, short string) error {
		for n > 0 {
			data, err := r.take(n)
			if err == io.EOF {
				return bad("%s", short)
			}
			if err != nil {
				return err
			}
			lh.Write(data)
			if _, err := w.Write(data); err != nil {
				return fmt.Errorf("rebuild %s: %w", e.Path, err)
			}
			n -= int64(len(data))
			written += int64(len(data))
			onWrite(int64(len(data)))
		}
		return nil
	}
	uvarint := func(what string) (int64, error) {
		v, err := binary.ReadUvarint(headers)
		var ce *Error
		switch {
		case errors.As(err, &ce) || err == io.EOF:
			return 0, err
		case err != nil:
			return 0, bad("%s: %v", what, err)
		case v > uint64(e.Size-written):
			return 0, bad("%s %d: beyond the layer's %d bytes", what, v, e.Size)
		}
		return int64(v), nil
	}
	for {
		raw, err := uvarint("record of")
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := copyN(headers, raw, "the stream ends inside a record"); err != nil {
			return err
		}
		m, err := uvarint("contents of")
		if err == io.EOF {
			return bad("the stream ends inside a record")
		}
		if err != nil {
			return err
		}
		if m > contentLeft {
			return bad("contents of %d bytes, %d left", m, contentLeft)
		}
		if err := copyN(content, m, "contents end early"); err != nil {
			return err
		}
		contentLeft -= m
	}
	switch {
	case contentLeft != 0:
		return bad("%d bytes of contents left over", contentLeft)
	case written != e.Size:
		return bad("%d bytes, the index says %d", written, e.Size)
	case hex.EncodeToString(lh.Sum(nil)) != e.SHA256:
		return bad("sha256 of the layer differs from the index")
	}
	return nil
}
