package image

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"strings"

	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pullship/pullship/schema"
)

// maxJSON bounds the manifests and configs Scan parses.
const maxJSON = 4 << 20

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// layout is the structure of a `docker save` stream that Scan checks once
// it has hashed every file.
type layout struct {
	config   string // path of the config JSON: its sha256 is the image ID
	repoTags []string
	layers   []layerRef
}

type layerRef struct {
	path   string // the file entry (symlinks resolved)
	diffID string // "sha256:<hex>" of the uncompressed layer tar
}

// dockerManifest is one element of a docker save manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// readLayout finds the image in fs: manifest.json (docker save, both the
// legacy <id>/layer.tar and the OCI-style blobs/sha256 layout) or, failing
// that, index.json (an OCI image layout, for which a docker-loadable stream
// is synthesized: its layer and config blobs plus a manifest.json).
func readLayout(fs *fileset) (*layout, *fileset, error) {
	if fs.find("manifest.json") == nil {
		if fs.find("index.json") == nil {
			return nil, nil, fmt.Errorf("neither manifest.json (docker save) nor index.json (OCI image layout) found")
		}
		var err error
		if fs, err = synthesizeOCI(fs); err != nil {
			return nil, nil, fmt.Errorf("OCI image layout: %w", err)
		}
	}
	var ms []dockerManifest
	if err := readJSON(fs, "manifest.json", &ms); err != nil {
		return nil, nil, err
	}
	if len(ms) != 1 {
		return nil, nil, fmt.Errorf("manifest.json: %d images; want exactly one (save one image per release image)", len(ms))
	}
	m := ms[0]
	l := &layout{repoTags: m.RepoTags}
	cfg, err := fs.resolve(m.Config)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest.json: config: %w", err)
	}
	l.config = cfg.Path
	var config struct {
		RootFS struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := readJSON(fs, cfg.Path, &config); err != nil {
		return nil, nil, err
	}
	if config.RootFS.Type != "layers" {
		return nil, nil, fmt.Errorf("config %s: rootfs type %q, want \"layers\"", m.Config, config.RootFS.Type)
	}
	if len(config.RootFS.DiffIDs) != len(m.Layers) {
		return nil, nil, fmt.Errorf("config %s lists %d layers (diff_ids), manifest.json %d", m.Config, len(config.RootFS.DiffIDs), len(m.Layers))
	}
	for i, p := range m.Layers {
		e, err := fs.resolve(p)
		if err != nil {
			return nil, nil, fmt.Errorf("manifest.json: layer %d: %w", i, err)
		}
		d := config.RootFS.DiffIDs[i]
		if !digestRE.MatchString(d) {
			return nil, nil, fmt.Errorf("config %s: diff_id %d %q is not sha256:<hex>", m.Config, i, d)
		}
		l.layers = append(l.layers, layerRef{path: e.Path, diffID: d})
	}
	return l, fs, nil
}

func readJSON(fs *fileset, p string, v any) error {
	data, err := readSmall(fs, p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

func readSmall(fs *fileset, p string) ([]byte, error) {
	e, err := fs.resolve(p)
	if err != nil {
		return nil, err
	}
	if e.Size > maxJSON {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", p, e.Size, maxJSON)
	}
	ra, err := e.open()
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	data := make([]byte, e.Size)
	if _, err := ra.ReadAt(data, 0); err != nil && !(err == io.EOF && e.Size == 0) {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return data, nil
}

// blobPath is where an OCI layout stores the blob with digest d.
func blobPath(d string) (string, error) {
	if !digestRE.MatchString(d) {
		return "", fmt.Errorf("digest %q: only sha256:<64 hex> supported", d)
	}
	return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:"), nil
}

// readBlob reads a small blob and checks its digest.
func readBlob(fs *fileset, desc ocispec.Descriptor) ([]byte, error) {
	p, err := blobPath(string(desc.Digest))
	if err != nil {
		return nil, err
	}
	data, err := readSmall(fs, p)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	if "sha256:"+hex.EncodeToString(sum[:]) != string(desc.Digest) {
		return nil, fmt.Errorf("%s: content does not match its digest", p)
	}
	return data, nil
}

// synthesizeOCI picks the image of an OCI layout (the only one, or the one
// for linux/GOARCH) and returns a docker save stream of it: the layer blobs
// as stored (gzip-compressed ones stay compressed: docker load inflates
// them), the config blob and a manifest.json naming them.
func synthesizeOCI(fs *fileset) (*fileset, error) {
	var idx ocispec.Index
	if err := readJSON(fs, "index.json", &idx); err != nil {
		return nil, err
	}
	desc, err := pickManifest(fs, idx.Manifests, 0)
	if err != nil {
		return nil, err
	}
	data, err := readBlob(fs, desc)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	out := &fileset{closers: fs.closers}
	dm := dockerManifest{Layers: []string{}}
	if name := desc.Annotations["io.containerd.image.name"]; name != "" {
		if ref, err := reference.ParseNormalizedNamed(name); err == nil {
			if _, tagged := ref.(reference.Tagged); tagged {
				dm.RepoTags = []string{reference.FamiliarString(ref)}
			}
		}
	}
	added := map[string]bool{}
	add := func(d string) (string, error) {
		p, err := blobPath(d)
		if err != nil {
			return "", err
		}
		e, err := fs.resolve(p)
		if err != nil {
			return "", err
		}
		if !added[p] {
			added[p] = true
			out.entries = append(out.entries, *e)
		}
		return p, nil
	}
	for i, l := range m.Layers {
		switch l.MediaType {
		case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip,
			"application/vnd.docker.image.rootfs.diff.tar", "application/vnd.docker.image.rootfs.diff.tar.gzip":
		default:
			return nil, fmt.Errorf("layer %d: media type %q unsupported (docker load takes tar or tar+gzip layers)", i, l.MediaType)
		}
		p, err := add(string(l.Digest))
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		dm.Layers = append(dm.Layers, p)
	}
	if dm.Config, err = add(string(m.Config.Digest)); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	mj, err := json.Marshal([]dockerManifest{dm})
	if err != nil {
		return nil, err
	}
	out.entries = append(out.entries, memFile("manifest.json", mj))
	return out, nil
}

const (
	mediaDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

func pickManifest(fs *fileset, descs []ocispec.Descriptor, depth int) (ocispec.Descriptor, error) {
	var cands []ocispec.Descriptor
	for _, d := range descs {
		if d.Platform != nil && (d.Platform.OS != "linux" || d.Platform.Architecture != runtime.GOARCH) {
			continue
		}
		switch d.MediaType {
		case ocispec.MediaTypeImageManifest, mediaDockerManifest, ocispec.MediaTypeImageIndex, mediaDockerList:
			cands = append(cands, d)
		}
	}
	if len(cands) != 1 {
		return ocispec.Descriptor{}, fmt.Errorf("index lists %d image manifests for linux/%s; want exactly one", len(cands), runtime.GOARCH)
	}
	d := cands[0]
	if d.MediaType != ocispec.MediaTypeImageIndex && d.MediaType != mediaDockerList {
		return d, nil
	}
	if depth >= 2 {
		return d, fmt.Errorf("image indexes nested too deep")
	}
	data, err := readBlob(fs, d)
	if err != nil {
		return d, fmt.Errorf("index: %w", err)
	}
	var sub ocispec.Index
	if err := json.Unmarshal(data, &sub); err != nil {
		return d, fmt.Errorf("index %s: %w", d.Digest, err)
	}
	inner, err := pickManifest(fs, sub.Manifests, depth+1)
	if err == nil && inner.Annotations == nil {
		inner.Annotations = d.Annotations // keep the image name of the outer descriptor
	}
	return inner, err
}

// check verifies, after the hashing pass, what readLayout could not: the
// config's sha256 is the image ID, each layer hashes (inflated, if gzip) to
// its diff_id, and every blobs/sha256/<hex> file hashes to <hex>.
func (l *layout) check(idx *schema.ImageIndex, inflated map[string]string) error {
	files := map[string]string{}
	for _, e := range idx.Entries {
		if e.Type == schema.EntryFile {
			files[e.Path] = e.SHA256
			if hexd, ok := strings.CutPrefix(e.Path, "blobs/sha256/"); ok && hexd != e.SHA256 {
				return fmt.Errorf("%s: content sha256 is %s", e.Path, e.SHA256)
			}
		}
	}
	idx.Digest = "sha256:" + files[l.config]
	for i, lr := range l.layers {
		got := files[lr.path]
		if s, ok := inflated[lr.path]; ok {
			got = s
		}
		if "sha256:"+got != lr.diffID {
			return fmt.Errorf("layer %d (%s): content sha256:%s does not match the config's diff_id %s", i, lr.path, got, lr.diffID)
		}
	}
	return nil
}
