package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
)

// OpenChunk returns a reader of the content of the chunk blob whose git id
// is blob, as [Reader.Scan] encoded and spooled it. It may be called
// concurrently and in any order, after a successful Scan. The blobs of
// chunks Scan was told it knows ([Reader.Know]) are not spooled: they are
// at the destination already. The caller checks the content (the pack
// writer verifies every object's id as it writes).
func (r *Reader) OpenChunk(blob string) (io.ReadCloser, error) {
	if r.blobs != nil {
		if rc, ok := r.blobs.open(blob); ok {
			return rc, nil
		}
	}
	return nil, fmt.Errorf("image %s: no chunk blob %s from its scan", r.src, blob)
}

// Digest returns the image ID (the sha256 of the config JSON) without
// scanning the layers, so that a release of an image the repository already
// holds can skip the scan. Scan checks it against everything else.
func (r *Reader) Digest() (string, error) {
	e := r.fs.find(r.layout.config)
	if e == nil {
		return "", fmt.Errorf("image %s: config %s missing", r.src, r.layout.config)
	}
	if e.Size > maxConfig {
		return "", fmt.Errorf("image %s: config %s is %d bytes", r.src, r.layout.config, e.Size)
	}
	ra, err := e.open()
	if err != nil {
		return "", fmt.Errorf("image %s: %w", r.src, err)
	}
	defer ra.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(ra, 0, e.Size)); err != nil {
		return "", fmt.Errorf("image %s: %w", r.src, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// maxConfig bounds an image config JSON.
const maxConfig = 16 << 20
