package engine

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/docker/docker/pkg/jsonmessage"
)

// Limits for the small metadata entries of a `docker save` tarball. They are
// read whole (manifest.json, index.json) or hashed with their names remembered
// (every entry up to maxMetaSize, to learn the config's digest), so they bound
// the memory the filter uses whatever the tarball says.
const (
	maxMetaSize    = 1 << 20
	maxMetaEntries = 100000
)

// metaNames are the entries by which an engine finds the images of a
// tarball. Only manifest.json names what the signed index pins: an OCI
// index.json (with oci-layout), which the containerd image store prefers,
// could name another manifest and config in the same tarball.
var metaNames = map[string]bool{"manifest.json": true, "index.json": true, "oci-layout": true, "repositories": true}

// saveFacts is what filterSaveTar learnt about the tarball it passed on.
type saveFacts struct {
	ConfigDigest string // "sha256:<hex>" of the single image's config, computed from its bytes
	Layers       []string
	// Config is the bytes of the entry whose digest check accepted (the
	// signed config), nil when no entry passed check.
	Config []byte
}

// filterSaveTar copies the `docker save` tarball r to w entry by entry,
// streaming, with every tag removed ("RepoTags" in manifest.json, the legacy
// "repositories" file) and without the OCI layout (index.json, oci-layout),
// so that either image store loads the image manifest.json names, whose
// config is checked, and nothing else; a link or other non-regular entry
// under one of those names is refused. It computes
// the config's digest from the bytes that pass, and calls check with it before
// writing the end-of-archive marker, so that when check (or anything else)
// fails the reader of w never sees a complete tarball.
//
// With sink set, the layers that arrive in the manifest's order after the
// manifest and the config (the order pullship's bundler gives an image's
// entries, which chunks.Rebuild keeps) go to the sink, which loads them
// ahead of the image (see [stager]), as many as its plan takes, the rest
// staying in w; the config's digest is checked before the first one goes,
// and the end-of-archive marker waits for the sink's loads. The layers the
// plan says the engine holds are left out of every load: their entries,
// when the tarball carries them, are read and dropped, and the tarball may
// as well leave them out.
//
// omit, when not nil, learns which layers the writer of r may leave out:
// those the plan says the engine holds; none without a sink.
func filterSaveTar(w io.Writer, r io.Reader, check func(configDigest string) error, sink layerSink, omit *Omit) (facts saveFacts, err error) {
	defer omit.decide(nil) // the writer waits no longer than the filter runs
	if sink != nil {
		defer func() {
			if err != nil {
				sink.abort(err)
			}
		}()
	}
	var (
		cfgPath string   // the config's path, once a stageable manifest is known
		layers  []string // its layers
		staged  []string // the layers, once the sink took the plan
		held    int      // staged[:held] are left out: the engine holds them
		next    int      // the layer the sink takes next
	)
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	digests := make(map[string]string)
	var small bytes.Buffer
	var manifest []map[string]json.RawMessage
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return facts, fmt.Errorf("read image tarball: %w", err)
		}
		name := path.Clean(hdr.Name)
		if metaNames[name] && hdr.Typeflag != tar.TypeReg {
			return facts, fmt.Errorf("read image tarball: %s is not a regular file (type %q)", name, hdr.Typeflag)
		}
		if hdr.Typeflag != tar.TypeReg {
			// A later entry of a name replaces the earlier one where the
			// engine unpacks: what was hashed under the name no longer
			// holds (a link planted over the checked config, say).
			delete(digests, name)
			if err := tw.WriteHeader(hdr); err != nil {
				return facts, fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err)
			}
			continue
		}
		switch name {
		case "repositories", "index.json", "oci-layout":
			continue // tags and the OCI layout: dropped
		case "manifest.json":
			data, err := readSmall(tr, hdr)
			if err != nil {
				return facts, err
			}
			if manifest != nil {
				return facts, errors.New("read image tarball: duplicate manifest.json")
			}
			manifest, data, err = untagManifest(data)
			if err == nil && sink != nil {
				cfgPath, layers = stageable(manifest)
			}
			if err != nil {
				return facts, fmt.Errorf("read image tarball %s: %w", name, err)
			}
			h := *hdr
			h.Size = int64(len(data))
			if err := tw.WriteHeader(&h); err != nil {
				return facts, fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err)
			}
			if _, err := tw.Write(data); err != nil {
				return facts, fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err)
			}
			continue
		}
		if staged != nil {
			// The layer this entry is, if it comes in the manifest's order;
			// held layers before it may be missing.
			i := next
			for i < held && i < len(staged) && name != staged[i] {
				i++
			}
			if i < len(staged) && name == staged[i] {
				next = i + 1
				if i < held {
					// The engine has it: the bytes, unchecked, go nowhere.
					if _, err := copyBig(io.Discard, tr); err != nil {
						return facts, fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err)
					}
					continue
				}
				if err := sink.take(i, hdr, tr); err != nil {
					return facts, err
				}
				continue
			}
		}
		if name == cfgPath && staged == nil && hdr.Size <= maxMetaSize {
			// The writer's next entry waits for the plan: its bytes do not
			// go on before the config's are read.
			omit.begin()
			data, err := readSmall(tr, hdr)
			if err != nil {
				return facts, err
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return facts, fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err)
			}
			if _, err := tw.Write(data); err != nil {
				return facts, fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err)
			}
			sum := sha256.Sum256(data)
			digests[name] = "sha256:" + hex.EncodeToString(sum[:])
			if check != nil {
				if err := check(digests[name]); err != nil {
					return facts, err
				}
			}
			facts.Config = data
			if h, n := sink.plan(data, layers); n > 0 {
				staged, held = layers[:n], h
			}
			omit.decide(staged[:held])
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return facts, fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err)
		}
		if hdr.Size > maxMetaSize || len(digests) >= maxMetaEntries {
			delete(digests, name) // not hashed: an earlier digest of the name no longer holds
			if _, err := copyBig(tw, tr); err != nil {
				return facts, fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err)
			}
			continue
		}
		// A small entry is kept whole while it passes, in case it is the
		// config (one entry at a time: the memory stays maxMetaSize).
		small.Reset()
		if _, err := io.Copy(io.MultiWriter(tw, &small), tr); err != nil {
			return facts, fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err)
		}
		sum := sha256.Sum256(small.Bytes())
		digests[name] = "sha256:" + hex.EncodeToString(sum[:])
		if check != nil && facts.Config == nil && check(digests[name]) == nil {
			facts.Config = bytes.Clone(small.Bytes())
		}
	}
	if manifest == nil {
		return facts, errors.New("read image tarball: no manifest.json (not a docker save tarball)")
	}
	if len(manifest) != 1 {
		return facts, fmt.Errorf("read image tarball: manifest.json lists %d images, want exactly 1", len(manifest))
	}
	var cfg string
	if err := json.Unmarshal(manifest[0]["Config"], &cfg); err != nil || cfg == "" {
		return facts, errors.New("read image tarball: manifest.json has no Config")
	}
	if raw, ok := manifest[0]["Layers"]; ok {
		if err := json.Unmarshal(raw, &facts.Layers); err != nil {
			return facts, fmt.Errorf("read image tarball: manifest.json Layers: %w", err)
		}
	}
	facts.ConfigDigest = digests[path.Clean(cfg)]
	if facts.ConfigDigest == "" {
		return facts, fmt.Errorf("read image tarball: config %q missing or larger than %d bytes", cfg, maxMetaSize)
	}
	if check != nil {
		if err := check(facts.ConfigDigest); err != nil {
			return facts, err
		}
	}

	if staged != nil {
		if err := sink.wait(); err != nil {
			return facts, err
		}
	}
	if err := tw.Close(); err != nil {
		return facts, fmt.Errorf("pass image tarball: %w", err)
	}
	return facts, nil
}

// Omit tells the writer of an image tarball which files a load does not
// need: the layers the engine holds already, which [Docker.LoadImage]
// leaves out on the classic image store. The writer asks [Omit.Skip]
// before it writes each entry, and may leave out an entry Skip names
// (pullship's agent then does not even rebuild the layer from its chunks);
// the load drops such an entry when it comes all the same. An Omit serves
// one load.
type Omit struct {
	mu      sync.Mutex
	pending bool            // the load has begun deciding
	decided chan struct{}   // closed once it has; paths is set then
	paths   map[string]bool // the entries the load does not need
	once    sync.Once
}

// NewOmit returns an Omit for one load.
func NewOmit() *Omit { return &Omit{decided: make(chan struct{})} }

// Skip reports whether the writer may leave out the entry at path. Once the
// load has the image config (the entries before it are never skipped), the
// writer's next entry waits for its decision, which takes a few requests
// to the engine and no more of the tarball. A nil Omit skips nothing.
func (o *Omit) Skip(p string) bool {
	if o == nil {
		return false
	}
	o.mu.Lock()
	pending := o.pending
	o.mu.Unlock()
	if !pending {
		return false
	}
	<-o.decided
	return o.paths[path.Clean(p)]
}

// begin says the load is deciding: the config's entry is being read, so
// the writer's next entry must wait for decide.
func (o *Omit) begin() {
	if o != nil {
		o.mu.Lock()
		o.pending = true
		o.mu.Unlock()
	}
}

// decide says which entries the load does not need; only the first call
// counts. Every load calls it before it ends, whatever happens.
func (o *Omit) decide(paths []string) {
	if o == nil {
		return
	}
	o.once.Do(func() {
		o.paths = make(map[string]bool, len(paths))
		for _, p := range paths {
			o.paths[p] = true
		}
		o.mu.Lock()
		o.pending = true
		o.mu.Unlock()
		close(o.decided)
	})
}

// layerSink takes layers out of a `docker save` stream ([stager]).
type layerSink interface {
	// plan learns the image config (its digest checked) and the manifest's
	// layer paths; it says how many of the layers, from the first, the
	// engine holds (held, left out of every load) and how many it takes
	// (n >= held; none: 0). The others stay in w.
	plan(config []byte, layers []string) (held, n int)
	// take gets layer i's tar entry (i >= held); the engine must not see
	// it otherwise.
	take(i int, hdr *tar.Header, r io.Reader) error
	// wait waits for what take started and reports its first failure.
	wait() error
	// abort stops what take started: the stream failed.
	abort(err error)
}

// stageable returns the config path and the layer paths (cleaned) of a
// manifest whose layers can be loaded one by one (one image, each layer
// file listed once, no foreign layer sources), or "" and nil.
func stageable(manifest []map[string]json.RawMessage) (string, []string) {
	if len(manifest) != 1 {
		return "", nil
	}
	if _, ok := manifest[0]["LayerSources"]; ok {
		return "", nil
	}
	var cfg string
	var layers []string
	if json.Unmarshal(manifest[0]["Config"], &cfg) != nil || cfg == "" ||
		json.Unmarshal(manifest[0]["Layers"], &layers) != nil || len(layers) == 0 {
		return "", nil
	}
	cfg = path.Clean(cfg)
	seen := map[string]bool{}
	for i, l := range layers {
		l = path.Clean(l)
		if seen[l] || l == cfg {
			return "", nil
		}
		seen[l], layers[i] = true, l
	}
	return cfg, layers
}

func readSmall(tr *tar.Reader, hdr *tar.Header) ([]byte, error) {
	if hdr.Size > maxMetaSize {
		return nil, fmt.Errorf("read image tarball: %s is %d bytes, limit %d", hdr.Name, hdr.Size, maxMetaSize)
	}
	data, err := io.ReadAll(io.LimitReader(tr, maxMetaSize))
	if err != nil {
		return nil, fmt.Errorf("read image tarball %s: %w", hdr.Name, err)
	}
	return data, nil
}

// untagManifest drops RepoTags from every entry of a docker save manifest.json,
// keeping every other field as it was.
func untagManifest(data []byte) ([]map[string]json.RawMessage, []byte, error) {
	var m []map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, nil, err
	}
	if m == nil {
		m = []map[string]json.RawMessage{}
	}
	for _, e := range m {
		if e == nil {
			return nil, nil, errors.New("null manifest entry")
		}
		delete(e, "RepoTags")
	}
	out, err := json.Marshal(m)
	return m, out, err
}

// loadOutput is what the engine said it loaded.
type loadOutput struct {
	IDs   []string // from "Loaded image ID: sha256:…"
	Names []string // from "Loaded image: name:tag"
}

// readLoadOutput reads the engine's reply to an image load: a JSON message
// stream (isJSON) or plain text. The engine reports failures after it has
// started answering inside the stream, with HTTP status 200; they are returned
// as errors here.
//
// Only well-formed image IDs ("sha256:" and 64 hex digits) are taken: the
// IDs are inspected and, on a refused load, removed, so anything else the
// stream calls an ID is an error.
func readLoadOutput(r io.Reader, isJSON bool) (loadOutput, error) {
	var out loadOutput
	var bad error
	line := func(s string) {
		for _, l := range strings.Split(s, "\n") {
			l = strings.TrimSpace(l)
			if id, ok := strings.CutPrefix(l, "Loaded image ID: "); ok {
				if !ValidImageID(id) {
					if bad == nil {
						bad = fmt.Errorf("read engine load output: malformed image ID %q", clip(id, 80))
					}
					continue
				}
				out.IDs = append(out.IDs, id)
			} else if n, ok := strings.CutPrefix(l, "Loaded image: "); ok {
				out.Names = append(out.Names, n)
			}
		}
	}
	if !isJSON {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line(sc.Text())
		}
		if err := sc.Err(); err != nil {
			return out, fmt.Errorf("read engine load output: %w", err)
		}
		return out, bad
	}
	dec := json.NewDecoder(r)
	for {
		var m jsonmessage.JSONMessage
		err := dec.Decode(&m)
		if err == io.EOF {
			return out, bad
		}
		if err != nil {
			return out, fmt.Errorf("read engine load output: %w", err)
		}
		if m.Error != nil {
			return out, fmt.Errorf("engine: %w", m.Error)
		}
		line(m.Stream)
	}
}

// clip shortens s to at most n bytes for an error message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// streamPiece is the size of the pieces an image stream moves in towards the
// engine through pipes, where io.Copy's 32 KiB would cost 16 times as many
// wake-ups, and in which it reaches a local engine's socket ([pieceBodies]).
const streamPiece = 512 << 10

var pieces = sync.Pool{New: func() any { return new([streamPiece]byte) }}

// copyBig copies r to w in pieces of up to streamPiece bytes.
func copyBig(w io.Writer, r io.Reader) (int64, error) {
	buf := pieces.Get().(*[streamPiece]byte)
	defer pieces.Put(buf)
	return io.CopyBuffer(onlyWriter{w}, onlyReader{r}, buf[:])
}

// onlyWriter and onlyReader hide ReaderFrom and WriterTo, so that
// io.CopyBuffer uses the buffer it is given.
type (
	onlyWriter struct{ io.Writer }
	onlyReader struct{ io.Reader }
)

// bodyReader is a request body read from the pipe r in pieces as large as
// the writes into it (up to streamPiece). Where the HTTP client reads a body
// 32 KiB at a time (an engine not on a unix socket, see [dockerClient]),
// each of those reads from the pipe itself would wake its writer (no faster
// without the buffer: one copy fewer, more wake-ups); [pieceBodies]
// reads it in pieces of streamPiece, which it passes straight through.
func bodyReader(r io.Reader) io.Reader { return bufio.NewReaderSize(r, streamPiece) }
