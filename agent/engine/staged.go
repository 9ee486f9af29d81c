package engine

import (
	"archive/tar"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
)

// LabelPartial marks the images a staged load creates on the way (see
// [stager]); its value is the ID of the image being loaded. They are
// removed when the load ends; one older than partialMaxAge is the leftover
// of an agent killed in the middle of a load, removed by the next load.
const LabelPartial = "pullship.partial-load"

const partialMaxAge = time.Hour

// partialConfigName is the partial image config's name in a part's tarball.
const partialConfigName = "pullship-partial.json"

// stager loads the layers of an image part by part while the rest of its
// `docker save` stream still arrives. The classic image store unpacks a
// load's whole tarball to disk before it registers any layer, so a single
// load registers nothing until the last byte is in; the stager instead sends
// the layers, as they come, in loads of their own ("parts"), each of a
// "partial" image whose config lists the layers up to its last one. The
// engine skips the layers it already has (those of the earlier parts) and
// registers the part's. A part holds one layer, or consecutive layers up to
// partBytes. The layers that end the image stay in the image's own load,
// which registers them after the parts ([stager.plan] says which).
//
// The layers the engine holds already, from the first (an update of an
// image whose lower layers did not change: [stager.heldLayers]), are sent
// to no load at all: the classic store's loader looks each layer up by its
// chain ID before it opens the layer's file, and opens it only when the
// layer is missing. The first layer sent, if it has no parent, goes into
// an import instead of a part: the engine registers it as its bytes arrive
// ([stager.takeBase]). The manifest
// that makes the engine process a part is written only once the part before
// it is loaded ([stager.seal]), so layers register in order while the next
// ones stream. The partial images hold the layers until the image's own load
// references them, then [stager.cleanup] removes them.
type stager struct {
	ctx    context.Context
	cli    *client.Client
	token  string                     // random, per load
	want   string                     // the image being loaded
	sizes  map[string]int64           // the caller's word on entry sizes (LoadImage), or nil
	base   map[string]json.RawMessage // os, architecture, variant of the image config
	diffs  []string                   // the image config's layer diff IDs
	layers []string                   // the manifest's layer paths
	staged int                        // how many of them go ahead, from the first

	// held: the engine holds layers[:held], which no load carries (see
	// heldLayers); sendAll: a load before this one that left layers out
	// failed, so this one looks for none.
	held    int
	sendAll bool

	parts []*part
	open  *part // the part take writes to, until sealed
	mu    sync.Mutex
	ids   []string // partial images the engine reported loading

	stop     chan struct{} // closed by abort
	stopErr  error
	stopOnce sync.Once
}

// part is the load of one or more layers (the base layer's import is one
// too).
type part struct {
	done chan struct{} // closed when the engine answered; err is set then
	err  error

	sent  chan struct{} // closed when the writer is done; cause is set then
	cause error         // why the writer cut the stream

	// A load's part (not the import): its stream, the previous part, and
	// once sealed the partial image's ID.
	pw    *io.PipeWriter
	tw    *tar.Writer
	prev  *part
	first int       // the first layer it holds
	last  int       // the last layer it holds
	size  int64     // the bytes of its layers
	mtime time.Time // of its last layer's entry
	id    string
}

func newStager(ctx context.Context, cli *client.Client, want string, sizes map[string]int64) *stager {
	var b [16]byte
	rand.Read(b[:])
	return &stager{ctx: ctx, cli: cli, token: hex.EncodeToString(b[:]), want: want, sizes: sizes, stop: make(chan struct{})}
}

// plan reads the image config: staging needs the diff IDs of the layers the
// manifest lists, one per layer. It returns how many layers, from the first,
// go ahead of the image's own load (0: the stream is not staged).
//
// A single layer has no parent: it is imported while it streams. Of more,
// the first is imported, and the last stays in the image's own load, which
// registers it with the image (a load of its own would cost the engine one
// more load and partial image). With the sizes of the layers known ahead,
// the image's own load keeps every layer after which less than partBytes
// follows: a part of its own would register it while those few bytes
// stream, not worth a load (docs/operations.md, "Why the agent is tuned as
// it is").
//
// The layers the engine holds, from the first, are left out of every load
// (held); the count of layers planned is then at least that.
func (s *stager) plan(config []byte, layers []string) (held, n int) {
	var all map[string]json.RawMessage
	var rootfs struct {
		DiffIDs []string `json:"diff_ids"`
	}
	if json.Unmarshal(config, &all) != nil || json.Unmarshal(all["rootfs"], &rootfs) != nil || len(rootfs.DiffIDs) != len(layers) {
		return 0, 0
	}
	s.base = map[string]json.RawMessage{}
	for _, k := range []string{"os", "architecture", "variant", "os.version"} {
		if v, ok := all[k]; ok {
			s.base[k] = v
		}
	}
	s.diffs, s.layers = rootfs.DiffIDs, layers
	s.staged = layersAhead(layers, s.sizes)
	if !s.sendAll {
		s.held = s.heldLayers(rootfs.DiffIDs)
	}
	if s.held > 0 && heldHook != nil {
		heldHook(s.want, s.held)
	}
	return s.held, max(s.staged, s.held)
}

// heldHook, when set (by tests), is called once a load has found that the
// engine holds the first held layers of image want, before any layer
// streams.
var heldHook func(want string, held int)

// maxHeldLookups bounds the images heldLayers inspects.
const maxHeldLookups = 32

// heldLayers returns how many of the layers diffIDs, from the first, the
// engine holds: the longest run whose chain IDs, computed from the signed
// diff IDs, are those of the lower layers of one of the engine's newest
// images (as the previous version of an image being updated usually is).
// The loads leave those layers out. A wrong answer cannot change what is
// loaded: the engine finds a layer by the chain ID the signed config gives,
// and the image it loads is checked against that config afterwards as any
// other (LoadImage). It costs a failed load: a layer the engine no longer
// has (its image removed meanwhile) fails the load, and the next load of
// the image sends every layer ([Docker.LoadImage]).
func (s *stager) heldLayers(diffIDs []string) int {
	want := chainIDs(diffIDs)
	if len(want) == 0 {
		return 0
	}
	list, err := s.cli.ImageList(s.ctx, image.ListOptions{})
	if err != nil {
		return 0
	}
	slices.SortFunc(list, func(a, b image.Summary) int { return cmp.Compare(b.Created, a.Created) })
	held := 0
	for _, im := range list[:min(len(list), maxHeldLookups)] {
		insp, err := s.cli.ImageInspect(s.ctx, im.ID)
		if err != nil || insp.RootFS.Type != "layers" {
			continue
		}
		have := chainIDs(insp.RootFS.Layers[:min(len(insp.RootFS.Layers), len(want))])
		n := 0
		for n < len(have) && have[n] == want[n] {
			n++
		}
		if held = max(held, n); held == len(want) {
			break
		}
	}
	return held
}

// chainIDs returns the chain IDs of the layers diffIDs, by which the
// engine's layer store knows them (the first layer's is its diff ID, each
// next one's the digest of the chain ID below it, a space and its diff
// ID), or nil if one of them is not a "sha256:<64 hex>" digest.
func chainIDs(diffIDs []string) []string {
	ids := make([]string, len(diffIDs))
	for i, d := range diffIDs {
		if !ValidImageID(d) {
			return nil
		}
		if i == 0 {
			ids[i] = d
			continue
		}
		sum := sha256.Sum256([]byte(ids[i-1] + " " + d))
		ids[i] = "sha256:" + hex.EncodeToString(sum[:])
	}
	return ids
}

// layersAhead returns how many of the layers, from the first, a staged load
// sends ahead of the image's own load (see [stager.plan]): one of one; of
// more, all but the last, or with every size known, all but those after
// which less than partBytes follows.
func layersAhead(layers []string, sizes map[string]int64) int {
	if len(layers) <= 1 {
		return len(layers)
	}
	n := len(layers) - 1
	var after int64 // the bytes of the layers after layer k
	for k := len(layers) - 1; k >= 1 && after < partBytes; k-- {
		size, ok := sizes[layers[k]]
		if !ok || size < 0 {
			return len(layers) - 1
		}
		n, after = k, after+size
	}
	return n
}

// partialConfig returns the config of the partial image of layers 0..i and
// its ID.
func (s *stager) partialConfig(i int) ([]byte, string, error) {
	c := map[string]any{}
	for k, v := range s.base {
		c[k] = v
	}
	c["created"] = time.Now().UTC().Format(time.RFC3339Nano)
	// The token: two loads of one image never make the same partial image.
	c["config"] = map[string]any{"Labels": map[string]string{LabelPartial: s.want, LabelPartial + ".token": s.token}}
	c["rootfs"] = map[string]any{"type": "layers", "diff_ids": s.diffs[:i+1]}
	data, err := json.Marshal(c)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(data)
	return data, "sha256:" + hex.EncodeToString(sum[:]), nil
}

// partBytes is the size past which a part is closed: layers smaller than
// that share a part with the ones after them (each load costs the engine a
// process and a partial image, about 0.1 s of CPU, so an image of many small
// layers is not loaded one small layer at a time), and a part as large
// registers in a fraction of a second once its bytes are in.
var partBytes int64 = 32 << 20 // a variable for tests

// take streams layer i (the tar entry hdr, its bytes from r) into the open
// part, or a new one, and returns once the bytes are sent; a part of
// partBytes or more, or with the last staged layer, is then closed, and its
// load completes in the background, after the previous part's.
func (s *stager) take(i int, hdr *tar.Header, r io.Reader) error {
	if i == 0 {
		return s.takeBase(hdr, r)
	}
	p := s.open
	if p == nil {
		p = s.newPart()
		p.first = i
		s.open = p
	}
	name := path.Clean(hdr.Name)
	if dir := path.Dir(name); dir != "." {
		if err := p.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: hdr.ModTime}); err != nil {
			return s.failOpen(fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err))
		}
	}
	h := *hdr
	if err := p.tw.WriteHeader(&h); err != nil {
		return s.failOpen(fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err))
	}
	if _, err := copyBig(p.tw, r); err != nil {
		return s.failOpen(fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err))
	}
	p.last, p.size, p.mtime = i, p.size+hdr.Size, hdr.ModTime
	if p.size >= partBytes || i == s.staged-1 {
		return s.seal()
	}
	return nil
}

// newPart starts the load of a new part; its tarball is written by take and
// ended by seal.
func (s *stager) newPart() *part {
	p := &part{done: make(chan struct{}), sent: make(chan struct{})}
	if len(s.parts) > 0 {
		p.prev = s.parts[len(s.parts)-1]
	}
	s.parts = append(s.parts, p)
	pr, pw := io.Pipe()
	p.pw, p.tw = pw, tar.NewWriter(pw)
	go func() {
		defer close(p.done)
		resp, err := s.cli.ImageLoad(s.ctx, bodyReader(pr), client.ImageLoadWithQuiet(true))
		var out loadOutput
		if err == nil {
			out, err = readLoadOutput(resp.Body, resp.JSON)
			resp.Body.Close()
		}
		pr.CloseWithError(errors.New("engine stopped reading"))
		<-p.sent // p.id and p.last are set, or p.cause
		if p.id != "" && slices.Contains(out.IDs, p.id) {
			s.mu.Lock()
			s.ids = append(s.ids, p.id)
			s.mu.Unlock()
		}
		switch {
		case p.cause != nil:
			p.err = p.cause // the engine's error is its consequence
		case err != nil:
			p.err = fmt.Errorf("load %s: %w", s.describe(p), err)
		case len(out.IDs) != 1 || out.IDs[0] != p.id:
			p.err = fmt.Errorf("load %s: engine reported images %q, want %s", s.describe(p), out.IDs, p.id)
		}
	}()
	return p
}

// describe names the layers of part p for errors.
func (s *stager) describe(p *part) string {
	if p.first == p.last {
		return fmt.Sprintf("layer %d (%s)", p.last+1, s.layers[p.last])
	}
	return fmt.Sprintf("layers %d-%d (%s to %s)", p.first+1, p.last+1, s.layers[p.first], s.layers[p.last])
}

// failOpen cuts the open part's stream with err.
func (s *stager) failOpen(err error) error {
	if p := s.open; p != nil {
		s.open = nil
		p.fail(err)
	}
	return err
}

// seal closes the open part: its manifest, which makes the engine process
// it, is written once the part before it is loaded, so layers register in
// order while the next ones stream.
func (s *stager) seal() error {
	p := s.open
	if p == nil {
		return nil
	}
	s.open = nil
	config, id, err := s.partialConfig(p.last)
	if err != nil {
		p.fail(err)
		return err
	}
	manifest, err := json.Marshal([]map[string]any{{"Config": partialConfigName, "Layers": s.layers[:p.last+1]}})
	if err != nil {
		p.fail(err)
		return err
	}
	p.id = id
	go func() {
		if p.prev != nil {
			select {
			case <-p.prev.done:
				if p.prev.err != nil {
					p.fail(p.prev.err)
					return
				}
			case <-s.stop:
				p.fail(s.stopErr)
				return
			}
		}
		for _, f := range []struct {
			name string
			data []byte
		}{{partialConfigName, config}, {"manifest.json", manifest}} {
			if err := p.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: p.mtime}); err != nil {
				p.fail(err)
				return
			}
			if _, err := p.tw.Write(f.data); err != nil {
				p.fail(err)
				return
			}
		}
		if err := p.tw.Close(); err != nil {
			p.fail(err)
			return
		}
		p.pw.Close()
		close(p.sent)
	}()
	return nil
}

// fail cuts the part's stream: the engine never sees its manifest.
func (p *part) fail(err error) {
	p.cause = err
	p.pw.CloseWithError(err)
	close(p.sent)
}

// takeBase streams the first layer into an import: a layer without a parent
// is registered by the engine as its bytes arrive, where a load would first
// unpack its whole tarball to disk. An import registers the layer exactly as
// a load does (same decompression, same diff ID over the bytes), and the
// partial image it makes is checked to hold the config's first diff ID.
func (s *stager) takeBase(hdr *tar.Header, r io.Reader) error {
	p := &part{done: make(chan struct{}), sent: make(chan struct{})}
	s.parts = append(s.parts, p)
	pr, pw := io.Pipe()
	go func() {
		defer close(p.done)
		err := s.importBase(pr)
		pr.CloseWithError(errors.New("engine stopped reading"))
		<-p.sent
		switch {
		case p.cause != nil:
			p.err = p.cause // the engine's error is its consequence
		case err != nil:
			p.err = fmt.Errorf("load layer 1 (%s): %w", hdr.Name, err)
		}
	}()
	p.pw = pw
	if _, err := copyBig(pw, r); err != nil {
		err = fmt.Errorf("pass image tarball entry %q: %w", hdr.Name, err)
		p.fail(err)
		return err
	}
	pw.Close()
	close(p.sent)
	return nil
}

// importBase imports the layer r as a partial image and checks the layer
// the engine registered.
func (s *stager) importBase(r io.Reader) error {
	resp, err := s.cli.ImageImport(s.ctx, image.ImportSource{Source: bodyReader(r), SourceName: "-"}, "", image.ImportOptions{
		Message: "pullship: first layer of " + s.want,
		Changes: []string{"LABEL " + LabelPartial + "=" + s.want, "LABEL " + LabelPartial + ".token=" + s.token},
	})
	if err != nil {
		return err
	}
	id, err := readImportOutput(resp)
	resp.Close()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ids = append(s.ids, id) // removed by cleanup, whatever the check says
	s.mu.Unlock()
	im, err := s.cli.ImageInspect(s.ctx, id)
	if err != nil {
		return err
	}
	if im.Config == nil || im.Config.Labels[LabelPartial+".token"] != s.token {
		return fmt.Errorf("engine imported %s without this load's label", id)
	}
	if im.RootFS.Type != "layers" || len(im.RootFS.Layers) != 1 || im.RootFS.Layers[0] != s.diffs[0] {
		return fmt.Errorf("engine registered layer %q, want %s (the config's first diff ID)", im.RootFS.Layers, s.diffs[0])
	}
	return nil
}

// readImportOutput reads the engine's reply to an image import, a JSON
// message stream whose last status is the new image's ID; errors arrive
// inside the stream.
func readImportOutput(r io.Reader) (string, error) {
	dec := json.NewDecoder(r)
	var id string
	for {
		var m jsonmessage.JSONMessage
		err := dec.Decode(&m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read engine import output: %w", err)
		}
		if m.Error != nil {
			return "", fmt.Errorf("engine: %w", m.Error)
		}
		id = strings.TrimSpace(m.Status)
	}
	if !ValidImageID(id) {
		return "", fmt.Errorf("read engine import output: no image ID (last status %q)", clip(id, 80))
	}
	return id, nil
}

// abort stops the parts whose load has not begun: the image's stream failed,
// so no further layer is registered.
func (s *stager) abort(err error) {
	s.failOpen(err)
	s.stopOnce.Do(func() {
		s.stopErr = err
		close(s.stop)
	})
}

// wait closes the open part, waits for every part's load and returns the
// first failure.
func (s *stager) wait() error {
	first := s.seal()
	for _, p := range s.parts {
		<-p.done
		if first == nil {
			first = p.err
		}
	}
	return first
}

// cleanup waits for the parts' loads, then removes the partial images this
// load created and those that loads killed midway left behind (older than
// partialMaxAge). It runs once the image's own load is over (its layers then
// held by the image, if it loaded), with a context of its own, so that a
// cancelled load still cleans up.
func (s *stager) cleanup() {
	s.wait() // every part's load is over: its image, if any, is listed
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), time.Minute)
	defer cancel()
	s.mu.Lock()
	ids := s.ids
	s.mu.Unlock()
	if list, err := s.cli.ImageList(ctx, image.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelPartial))}); err == nil {
		for _, im := range list {
			if time.Since(time.Unix(im.Created, 0)) > partialMaxAge {
				ids = append(ids, im.ID)
			}
		}
	}
	for _, id := range ids {
		if ValidImageID(id) {
			_, _ = s.cli.ImageRemove(ctx, id, image.RemoveOptions{})
		}
	}
}
