package schema

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// Image index limits. They bound what an agent will fetch and write for one
// image whatever a (signed but buggy or hostile) index says. The encoded file
// is also bounded by [MaxFileSize], which in practice limits an index to
// about 24 000 chunks (~24 GiB of images at the 1 MiB average chunk size).
const (
	MaxImageSize     = 64 << 30 // total bytes of all files of the docker save stream
	MaxImageEntries  = 1 << 16  // tar entries
	MaxImageChunks   = 1 << 17  // chunk references, duplicates included
	MaxImageChunk    = 8 << 20  // bytes in one chunk (the chunker's maximum)
	MaxImageRepoTags = 64
	maxImagePath     = 1024
)

// ImageFormat is the only image stream format: the tar stream that
// `docker save` writes and `docker load` reads.
const ImageFormat = "docker-save"

// ImageIndexVersion is the newest index version this package reads. An
// index without a version is version 1: every file is chunked as it is.
// Version 2 adds split layers ([ImageEntry.Headers]). A reader refuses a
// newer version with an error saying to upgrade, before it looks at keys
// it would not know.
const ImageIndexVersion = 2

// MaxSplitOverhead bounds, for a split layer, the bytes of its header
// stream beyond the layer's own bytes that are not file contents: the
// record lengths (docs/format.md, "Split layers"), at most 20 bytes per
// record, about one record per file (each has a 512-byte header), counted
// as one per 256 bytes of the rest, plus two.
const MaxSplitOverhead = 20

// ChunkZstd is the chunk encoding of an index whose chunk blobs hold each
// chunk as one zstd frame ([ImageIndex.ChunkEncoding]); without it a blob
// holds the chunk's bytes as they are.
const ChunkZstd = "zstd"

// Entry types of an [ImageEntry].
const (
	EntryFile    = "file"
	EntryDir     = "dir"
	EntrySymlink = "symlink"
)

// ImageIndex is an image index file, images/<name>.toml: the ordered tar
// entries of the image's `docker save` stream, every regular file split into
// content-defined chunks. Rebuilding the stream from the chunks gives the
// files byte for byte (tar headers are normalised: see docs/format.md), and
// `docker load` of it yields the image whose ID is Digest.
type ImageIndex struct {
	Name   string `toml:"name"`
	Digest string `toml:"digest"` // image ID: "sha256:<hex>" of the config JSON
	Format string `toml:"format"` // ImageFormat
	// Version is 0 (an index of version 1, as written before split layers)
	// or 2: entries may be split layers.
	Version int64 `toml:"version,omitempty"`
	// RepoTags are the tags manifest.json carries. Informational only: an
	// agent must never let a loaded tarball retag an existing image.
	RepoTags []string `toml:"repo_tags,omitempty"`
	// ChunkEncoding is how chunk blobs hold their chunk: "" (the bytes as
	// they are) or ChunkZstd (then every chunk has a BlobSize).
	ChunkEncoding string       `toml:"chunk_encoding,omitempty"`
	Entries       []ImageEntry `toml:"entry"`
}

// ImageEntry is one tar entry of the stream.
type ImageEntry struct {
	Path     string `toml:"path"` // clean relative slash path, no trailing slash
	Type     string `toml:"type"` // EntryFile, EntryDir or EntrySymlink
	Mode     int64  `toml:"mode"` // permission bits only (0..0o777)
	Size     int64  `toml:"size"` // bytes of a file; 0 otherwise
	Linkname string `toml:"linkname,omitempty"`
	// SHA256 is the hex sha256 of the whole file, when the bundler recorded
	// it. Chunks are what an agent verifies; this lets a reader check layer
	// diff IDs against the config without the chunks.
	SHA256 string `toml:"sha256,omitempty"`
	// Headers, when set, makes the file a split layer (index version 2):
	// Headers are the chunks of its header stream (the tar headers,
	// padding and end-of-archive blocks of the layer, with the length of
	// each file's contents, docs/format.md "Split layers") and Chunks the
	// chunks of the contents of its files, in order, without the tar
	// framing. Without Headers, Chunks are the file's bytes as they are.
	Headers []Chunk `toml:"headers,omitempty"`
	Chunks  []Chunk `toml:"chunks,omitempty"`
}

// Split reports whether the entry is a split layer.
func (e *ImageEntry) Split() bool { return len(e.Headers) > 0 }

// StreamChunks returns the entry's chunks in the order a rebuild first
// needs them: the header stream's, then the contents'. The slice must not
// be modified.
func (e *ImageEntry) StreamChunks() []Chunk {
	if len(e.Headers) == 0 {
		return e.Chunks
	}
	return append(append(make([]Chunk, 0, len(e.Headers)+len(e.Chunks)), e.Headers...), e.Chunks...)
}

// ContentSize returns the bytes of the entry's Chunks: its size, or for a
// split layer the size of its files' contents.
func (e *ImageEntry) ContentSize() int64 {
	var n int64
	for _, c := range e.Chunks {
		n += c.Size
	}
	return n
}

// HeaderSize returns the bytes of a split layer's header stream.
func (e *ImageEntry) HeaderSize() int64 {
	var n int64
	for _, c := range e.Headers {
		n += c.Size
	}
	return n
}

// Chunk is one content-defined piece of a file. The chunk's bytes are stored
// in the release repository as a git blob whose object id is Blob: the bytes
// as they are, or (BlobSize set, in an index whose ChunkEncoding is
// ChunkZstd) one zstd frame of BlobSize bytes that decodes to them.
type Chunk struct {
	SHA256   string `toml:"sha256"` // hex sha256 of the chunk's bytes
	Size     int64  `toml:"size"`
	Blob     string `toml:"blob"`                // git blob id: hex sha1 of "blob <blob size>\x00" + blob content
	BlobSize int64  `toml:"blob_size,omitempty"` // zstd: the blob's size
}

// Encoded reports whether the chunk's blob holds it zstd-encoded.
func (c Chunk) Encoded() bool { return c.BlobSize != 0 }

// StoredSize returns the size of the chunk's blob.
func (c Chunk) StoredSize() int64 {
	if c.Encoded() {
		return c.BlobSize
	}
	return c.Size
}

// MaxBlobSize is the largest blob a zstd-encoded chunk of size bytes may
// have: zstd stores data it cannot compress in raw blocks, 3 bytes of header
// per 128 KiB, plus the frame header.
func MaxBlobSize(size int64) int64 { return size + size>>10 + 1024 }

// StoredSize returns the sum of the sizes of the image's distinct chunk
// blobs: the most a fetch of the image brings, git's framing aside.
func (idx *ImageIndex) StoredSize() int64 {
	seen := map[string]bool{}
	var n int64
	for i := range idx.Entries {
		for _, c := range idx.Entries[i].StreamChunks() {
			if !seen[c.Blob] {
				seen[c.Blob] = true
				n += c.StoredSize()
			}
		}
	}
	return n
}

// TotalSize returns the sum of the sizes of all files of the stream.
func (idx *ImageIndex) TotalSize() int64 {
	var n int64
	for i := range idx.Entries {
		n += idx.Entries[i].Size
	}
	return n
}

// FileSizes returns the size of each file of the stream, by path.
func (idx *ImageIndex) FileSizes() map[string]int64 {
	sizes := make(map[string]int64)
	for i := range idx.Entries {
		if e := &idx.Entries[i]; e.Type == EntryFile {
			sizes[e.Path] = e.Size
		}
	}
	return sizes
}

var (
	imageNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	imageIDRE   = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	sha256RE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	gitIDRE     = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// ParseImageIndex decodes and validates an image index read from the file
// called name (used in errors only). Unknown keys and every violation of
// docs/format.md are errors.
func ParseImageIndex(name string, data []byte) (*ImageIndex, error) {
	if err := checkIndexVersion(name, data); err != nil {
		return nil, err
	}
	var idx ImageIndex
	if err := DecodeStrict(name, data, &idx); err != nil {
		return nil, err
	}
	if err := idx.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	idx.normalize()
	return &idx, nil
}

// ErrIndexVersion wraps the refusal of an index newer than this reader.
var ErrIndexVersion = Refused(errors.New("image index version unsupported"))

// checkIndexVersion reads the format and version of an index leniently, so
// that an index of a newer version is refused for what it is (and not for
// a key this reader does not know).
func checkIndexVersion(name string, data []byte) error {
	if len(data) > MaxFileSize {
		return nil // DecodeStrict says so
	}
	// The top-level keys come before the first table.
	if i := bytes.Index(data, []byte("\n[")); i >= 0 {
		data = data[:i+1]
	}
	var head struct {
		Format  string `toml:"format"`
		Version any    `toml:"version"`
	}
	if _, err := toml.Decode(string(data), &head); err != nil {
		return nil // DecodeStrict says why
	}
	v, ok := head.Version.(int64)
	switch {
	case head.Version == nil:
	case !ok:
		return fmt.Errorf("%s: %w: version %v is not an integer", name, ErrIndexVersion, head.Version)
	case v > ImageIndexVersion:
		return fmt.Errorf("%s: %w: the index is version %d, this pullship reads versions 1 to %d: upgrade it (pullship-agent too) to apply this release", name, ErrIndexVersion, v, ImageIndexVersion)
	}
	if head.Format != "" && head.Format != ImageFormat {
		return fmt.Errorf("%s: %w: format %q, this pullship reads %q: upgrade it to apply this release", name, ErrIndexVersion, head.Format, ImageFormat)
	}
	return nil
}

// normalize makes empty lists nil and version 1 the zero version, so that
// decode(Encode(x)) deep-equals x.
func (idx *ImageIndex) normalize() {
	if len(idx.RepoTags) == 0 {
		idx.RepoTags = nil
	}
	if idx.Version == 1 {
		idx.Version = 0
	}
	for i := range idx.Entries {
		if len(idx.Entries[i].Chunks) == 0 {
			idx.Entries[i].Chunks = nil
		}
		if len(idx.Entries[i].Headers) == 0 {
			idx.Entries[i].Headers = nil
		}
	}
}

// Validate checks every rule of docs/format.md for image indexes.
func (idx *ImageIndex) Validate() error {
	if !imageNameRE.MatchString(idx.Name) {
		return fmt.Errorf("image name %q: want 1-64 of [a-z0-9._-], starting with a letter or digit", idx.Name)
	}
	if !imageIDRE.MatchString(idx.Digest) {
		return fmt.Errorf("image %s: digest %q is not \"sha256:<64 lowercase hex>\"", idx.Name, idx.Digest)
	}
	if idx.Format != ImageFormat {
		return fmt.Errorf("image %s: format %q unsupported (want %q)", idx.Name, idx.Format, ImageFormat)
	}
	if idx.Version != 0 && idx.Version != 1 && idx.Version != ImageIndexVersion {
		return fmt.Errorf("image %s: %w: version %d (this pullship reads 1 to %d)", idx.Name, ErrIndexVersion, idx.Version, ImageIndexVersion)
	}
	if idx.ChunkEncoding != "" && idx.ChunkEncoding != ChunkZstd {
		return fmt.Errorf("image %s: chunk_encoding %q unsupported (want %q or none)", idx.Name, idx.ChunkEncoding, ChunkZstd)
	}
	if len(idx.RepoTags) > MaxImageRepoTags {
		return fmt.Errorf("image %s: %d repo tags, more than %d", idx.Name, len(idx.RepoTags), MaxImageRepoTags)
	}
	for _, t := range idx.RepoTags {
		if t == "" || len(t) > 256 || !utf8.ValidString(t) || strings.IndexFunc(t, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return fmt.Errorf("image %s: repo tag %q: want 1-256 printable characters without spaces", idx.Name, t)
		}
	}
	if len(idx.Entries) == 0 {
		return fmt.Errorf("image %s: no entries", idx.Name)
	}
	if len(idx.Entries) > MaxImageEntries {
		return fmt.Errorf("image %s: %d entries, more than %d", idx.Name, len(idx.Entries), MaxImageEntries)
	}
	seen := make(map[string]string, len(idx.Entries)) // path → type
	chunks := make(map[string]Chunk)
	var total int64
	nchunks := 0
	for i := range idx.Entries {
		e := &idx.Entries[i]
		if err := checkEntryPath(e.Path); err != nil {
			return fmt.Errorf("image %s: entry %d: %w", idx.Name, i, err)
		}
		if _, dup := seen[e.Path]; dup {
			return fmt.Errorf("image %s: entry %q: duplicate path", idx.Name, e.Path)
		}
		seen[e.Path] = e.Type
		if e.Mode < 0 || e.Mode > 0o777 {
			return fmt.Errorf("image %s: entry %q: mode %#o: only permission bits 0..0777 allowed (no setuid, setgid, sticky)", idx.Name, e.Path, e.Mode)
		}
		if e.SHA256 != "" && (e.Type != EntryFile || !sha256RE.MatchString(e.SHA256)) {
			return fmt.Errorf("image %s: entry %q: sha256 %q: want 64 lowercase hex on a file", idx.Name, e.Path, e.SHA256)
		}
		switch e.Type {
		case EntryFile:
			if e.Linkname != "" {
				return fmt.Errorf("image %s: entry %q: a file has no linkname", idx.Name, e.Path)
			}
			if e.Size < 0 || e.Size > MaxImageSize {
				return fmt.Errorf("image %s: entry %q: size %d out of range", idx.Name, e.Path, e.Size)
			}
			var sum int64
			checkChunk := func(what string, j int, c Chunk) error {
				if !sha256RE.MatchString(c.SHA256) || !gitIDRE.MatchString(c.Blob) {
					return fmt.Errorf("image %s: entry %q: %s %d: want sha256 of 64 and blob of 40 lowercase hex", idx.Name, e.Path, what, j)
				}
				if c.Size < 1 || c.Size > MaxImageChunk {
					return fmt.Errorf("image %s: entry %q: %s %d: size %d not in 1..%d", idx.Name, e.Path, what, j, c.Size, MaxImageChunk)
				}
				switch {
				case idx.ChunkEncoding == ChunkZstd && (c.BlobSize < 1 || c.BlobSize > MaxBlobSize(c.Size)):
					return fmt.Errorf("image %s: entry %q: %s %d: blob_size %d not in 1..%d (zstd chunks)", idx.Name, e.Path, what, j, c.BlobSize, MaxBlobSize(c.Size))
				case idx.ChunkEncoding == "" && c.BlobSize != 0:
					return fmt.Errorf("image %s: entry %q: %s %d: blob_size without a chunk_encoding", idx.Name, e.Path, what, j)
				}
				if prev, ok := chunks[c.SHA256]; ok && prev != c {
					return fmt.Errorf("image %s: entry %q: chunk %s listed with different size or blob", idx.Name, e.Path, c.SHA256)
				}
				chunks[c.SHA256] = c
				return nil
			}
			for j, c := range e.Chunks {
				if err := checkChunk("chunk", j, c); err != nil {
					return err
				}
				sum += c.Size
			}
			if e.Split() {
				if idx.Version < 2 {
					return fmt.Errorf("image %s: entry %q: headers (a split layer) need version = 2", idx.Name, e.Path)
				}
				if e.SHA256 == "" {
					return fmt.Errorf("image %s: entry %q: a split layer needs its sha256", idx.Name, e.Path)
				}
				var hsum int64
				for j, c := range e.Headers {
					if err := checkChunk("header chunk", j, c); err != nil {
						return err
					}
					hsum += c.Size
				}
				// The header stream holds the layer's bytes that are not
				// file contents, and a few bytes of lengths per record.
				if rest := e.Size - sum; rest < 0 || hsum < rest || hsum-rest > MaxSplitOverhead*(rest/256+2) {
					return fmt.Errorf("image %s: entry %q: a split layer of %d bytes cannot hold %d bytes of contents and a header stream of %d", idx.Name, e.Path, e.Size, sum, hsum)
				}
				nchunks += len(e.Headers)
				sum = e.Size
			}
			if sum != e.Size {
				return fmt.Errorf("image %s: entry %q: chunk sizes sum to %d, file size is %d", idx.Name, e.Path, sum, e.Size)
			}
			nchunks += len(e.Chunks)
			if nchunks > MaxImageChunks {
				return fmt.Errorf("image %s: more than %d chunks", idx.Name, MaxImageChunks)
			}
			total += e.Size
			if total > MaxImageSize {
				return fmt.Errorf("image %s: files total more than %d bytes", idx.Name, int64(MaxImageSize))
			}
		case EntryDir, EntrySymlink:
			if e.Size != 0 || len(e.Chunks) != 0 || len(e.Headers) != 0 {
				return fmt.Errorf("image %s: entry %q: a %s has no size or chunks", idx.Name, e.Path, e.Type)
			}
			if e.Type == EntryDir && e.Linkname != "" {
				return fmt.Errorf("image %s: entry %q: a dir has no linkname", idx.Name, e.Path)
			}
			if e.Type == EntrySymlink {
				if err := checkLinkname(e.Path, e.Linkname); err != nil {
					return fmt.Errorf("image %s: entry %q: %w", idx.Name, e.Path, err)
				}
			}
		default:
			return fmt.Errorf("image %s: entry %q: type %q not allowed (want file, dir or symlink)", idx.Name, e.Path, e.Type)
		}
	}
	// A symlink (or file) as a parent directory would let an entry be
	// written through it, outside the tree.
	for i := range idx.Entries {
		p := idx.Entries[i].Path
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if t, ok := seen[d]; ok && t != EntryDir {
				return fmt.Errorf("image %s: entry %q: parent %q is a %s", idx.Name, p, d, t)
			}
		}
	}
	return nil
}

// CheckImagePath reports whether p is acceptable as an entry path: relative,
// clean, slash-separated, printable UTF-8, no "..", no backslash, at most
// 1024 bytes.
func CheckImagePath(p string) error { return checkEntryPath(p) }

func checkEntryPath(p string) error {
	switch {
	case p == "" || p == ".":
		return fmt.Errorf("path %q is empty", p)
	case len(p) > maxImagePath:
		return fmt.Errorf("path %.40q…: longer than %d bytes", p, maxImagePath)
	case !utf8.ValidString(p):
		return fmt.Errorf("path %q is not UTF-8", p)
	case strings.IndexFunc(p, unicode.IsControl) >= 0:
		return fmt.Errorf("path %q contains a control character", p)
	case strings.Contains(p, `\`):
		return fmt.Errorf("path %q contains a backslash", p)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("path %q is absolute", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fmt.Errorf("path %q contains a \"..\" element", p)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("path %q is not clean (want %q)", p, path.Clean(p))
	}
	return nil
}

// checkLinkname allows only relative symlinks that resolve inside the tree
// (docker save links duplicate layers as ../<id>/layer.tar).
func checkLinkname(p, link string) error {
	if link == "" {
		return fmt.Errorf("symlink without linkname")
	}
	if len(link) > maxImagePath || !utf8.ValidString(link) || strings.IndexFunc(link, unicode.IsControl) >= 0 || strings.Contains(link, `\`) {
		return fmt.Errorf("linkname %q: want printable UTF-8 without backslash", link)
	}
	if strings.HasPrefix(link, "/") {
		return fmt.Errorf("linkname %q is absolute", link)
	}
	t := path.Join(path.Dir(p), link)
	if t == ".." || strings.HasPrefix(t, "../") || t == "." {
		return fmt.Errorf("linkname %q points outside the image", link)
	}
	return nil
}

// Encode validates idx and returns its canonical TOML form: fixed key order,
// modes in octal, one chunk per line. Equal indexes encode to equal bytes.
func (idx *ImageIndex) Encode() ([]byte, error) {
	if err := idx.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("# pullship image index: docs/format.md\n")
	fmt.Fprintf(&b, "name = %s\n", tomlString(idx.Name))
	fmt.Fprintf(&b, "digest = %s\n", tomlString(idx.Digest))
	fmt.Fprintf(&b, "format = %s\n", tomlString(idx.Format))
	if idx.Version > 1 {
		fmt.Fprintf(&b, "version = %d\n", idx.Version)
	}
	if idx.ChunkEncoding != "" {
		fmt.Fprintf(&b, "chunk_encoding = %s\n", tomlString(idx.ChunkEncoding))
	}
	if len(idx.RepoTags) > 0 {
		b.WriteString("repo_tags = [")
		for i, t := range idx.RepoTags {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(tomlString(t))
		}
		b.WriteString("]\n")
	}
	for _, e := range idx.Entries {
		b.WriteString("\n[[entry]]\n")
		fmt.Fprintf(&b, "path = %s\n", tomlString(e.Path))
		fmt.Fprintf(&b, "type = %s\n", tomlString(e.Type))
		fmt.Fprintf(&b, "mode = 0o%03o\n", e.Mode)
		fmt.Fprintf(&b, "size = %d\n", e.Size)
		if e.Linkname != "" {
			fmt.Fprintf(&b, "linkname = %s\n", tomlString(e.Linkname))
		}
		if e.SHA256 != "" {
			fmt.Fprintf(&b, "sha256 = %s\n", tomlString(e.SHA256))
		}
		writeChunks(&b, "headers", e.Headers)
		writeChunks(&b, "chunks", e.Chunks)
	}
	if b.Len() > MaxFileSize {
		return nil, fmt.Errorf("image %s: index of %d bytes is larger than the %d bytes a file may have", idx.Name, b.Len(), MaxFileSize)
	}
	return b.Bytes(), nil
}

func writeChunks(b *bytes.Buffer, key string, list []Chunk) {
	if len(list) == 0 {
		return
	}
	b.WriteString(key + " = [\n")
	for _, c := range list {
		if c.Encoded() {
			fmt.Fprintf(b, "  { sha256 = %q, size = %d, blob = %q, blob_size = %d },\n", c.SHA256, c.Size, c.Blob, c.BlobSize)
		} else {
			fmt.Fprintf(b, "  { sha256 = %q, size = %d, blob = %q },\n", c.SHA256, c.Size, c.Blob)
		}
	}
	b.WriteString("]\n")
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			b.WriteString(`\u`)
			h := strconv.FormatInt(int64(r), 16)
			b.WriteString(strings.Repeat("0", 4-len(h)) + h)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
