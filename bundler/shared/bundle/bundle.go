package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// Refs and paths of a release repository.
const (
	ReleasesRef    = "refs/heads/releases"
	RootRef        = "refs/pullship/root" // root/ of a repository with no release yet
	ImageTagPrefix = "refs/tags/pullship/images/"
	StatusPrefix   = "refs/heads/status/"

	ManifestPath = "release.toml"
	RootDir      = "root"
	NodesDir     = "nodes"
	ImagesDir    = "images"
)

// ImageTag is the ref holding the chunks of the image with ID digest.
func ImageTag(digest string) string {
	return ImageTagPrefix + strings.TrimPrefix(digest, "sha256:")
}

// MaxHistoryPack bounds a fetch of the release branch: release history holds
// manifests and config files only (images live in their own tags).
const MaxHistoryPack = 256 << 20

// Bundle is the signed part of one release commit, read but not yet
// trusted: release.toml and its signatures, and the listing of root/ (the
// roots themselves are read by [Trust.Verify], each only after the root
// before it verified it).
type Bundle struct {
	Commit   plumbing.Hash
	Manifest []byte // release.toml, exact bytes
	Sig      []byte // release.toml.sig

	st       *repo.Store
	rootEnts map[int64]rootEnt
}

// rootEnt is root/root-N.toml's blob and its .sig's (zero: no .sig).
type rootEnt struct{ data, sig plumbing.Hash }

// Read reads release.toml and its signatures from commit in st, each
// bounded in size, and lists root/ (checking its names, reading nothing).
func Read(st *repo.Store, commit plumbing.Hash) (*Bundle, error) {
	b := &Bundle{Commit: commit, st: st}
	var err error
	if b.Manifest, err = st.ReadFile(commit, ManifestPath, schema.MaxFileSize); err != nil {
		return nil, fmt.Errorf("release commit %s: %w", short(commit), err)
	}
	if b.Sig, err = st.ReadFile(commit, schema.SigFileName(ManifestPath), schema.MaxSignatureFileLen); err != nil {
		if errors.Is(err, repo.ErrNotFound) {
			return nil, schema.Refused(fmt.Errorf("release commit %s: unsigned: no %s", short(commit), schema.SigFileName(ManifestPath)))
		}
		return nil, fmt.Errorf("release commit %s: %w", short(commit), err)
	}
	if b.rootEnts, err = listRoots(st, commit); err != nil {
		return nil, err
	}
	return b, nil
}

// MaxRoots bounds the root chain a commit may carry.
const MaxRoots = 1000

// listRoots checks the names under root/ in commit and returns the blob ids
// of each root-N.toml and its .sig. Any other entry there is an error.
func listRoots(st *repo.Store, commit plumbing.Hash) (map[int64]rootEnt, error) {
	ents, err := st.ListTree(commit, RootDir)
	if err != nil {
		return nil, fmt.Errorf("release commit %s: %w", short(commit), err)
	}
	if len(ents) > 2*MaxRoots {
		return nil, fmt.Errorf("release commit %s: %d entries under root/ (at most %d roots)", short(commit), len(ents), MaxRoots)
	}
	out := make(map[int64]rootEnt, len(ents)/2)
	sigs := map[int64]plumbing.Hash{}
	for _, e := range ents {
		base, isSig := strings.CutSuffix(e.Name, ".sig")
		n, ok := RootNumber(base)
		if !ok || e.Mode != filemode.Regular {
			return nil, fmt.Errorf("release commit %s: unexpected entry root/%s", short(commit), e.Name)
		}
		if isSig {
			sigs[n] = e.ID
			continue
		}
		out[n] = rootEnt{data: e.ID}
	}
	for n, id := range sigs {
		e, ok := out[n]
		if !ok {
			return nil, fmt.Errorf("release commit %s: root/%s without root/%s", short(commit), schema.SigFileName(schema.RootFileName(n)), schema.RootFileName(n))
		}
		e.sig = id
		out[n] = e
	}
	return out, nil
}

// readRoot reads root n and its .sig, each bounded by its kind's cap.
func (b *Bundle) readRoot(n int64, e rootEnt) (schema.SignedFile, error) {
	name := schema.RootFileName(n)
	f := schema.SignedFile{Name: name}
	var err error
	if f.Data, err = readBlob(b.st, e.data, schema.MaxRootFileLen); err != nil {
		return f, fmt.Errorf("release commit %s: root/%s: %w", short(b.Commit), name, err)
	}
	if !e.sig.IsZero() {
		if f.Sig, err = readBlob(b.st, e.sig, schema.MaxSignatureFileLen); err != nil {
			return f, fmt.Errorf("release commit %s: root/%s: %w", short(b.Commit), schema.SigFileName(name), err)
		}
	}
	return f, nil
}

func readBlob(st *repo.Store, id plumbing.Hash, max int64) ([]byte, error) {
	size, err := st.BlobSize(id)
	if err != nil {
		return nil, err
	}
	if size > max {
		return nil, fmt.Errorf("%d bytes exceeds the limit of %d", size, max)
	}
	rc, err := st.OpenBlob(id, size)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// ReadRoots returns every root-N.toml (with its .sig) under root/ in
// commit, ordered by N, each bounded in size: the release side's view of
// the chain it extends. Readers that trust nothing yet use [Trust.Verify].
func ReadRoots(st *repo.Store, commit plumbing.Hash) ([]schema.SignedFile, error) {
	ents, err := listRoots(st, commit)
	if err != nil {
		return nil, err
	}
	ns := make([]int64, 0, len(ents))
	for n := range ents {
		ns = append(ns, n)
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	b := &Bundle{Commit: commit, st: st}
	out := make([]schema.SignedFile, 0, len(ns))
	for _, n := range ns {
		f, err := b.readRoot(n, ents[n])
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// RootNumber parses a root file name, "root-N.toml", into N.
func RootNumber(name string) (int64, bool) {
	s, ok := strings.CutPrefix(name, "root-")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, ".toml")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 || strconv.FormatInt(n, 10) != s {
		return 0, false
	}
	return n, true
}

// Verified is a release whose signatures met the threshold of a root
// trusted through the pinned one.
type Verified struct {
	Commit         plumbing.Hash
	Manifest       []byte
	ManifestSHA256 string
	Release        *schema.Release
	Root           *schema.Root
	Signatures     *schema.ThresholdResult
	// NewRoots are the roots verified beyond the reader's newest trusted
	// root, oldest first: what [Trust.Accept] persists.
	NewRoots []schema.SignedFile
}

// MaxClockSkew is how far in the future a release's created time may lie.
const MaxClockSkew = 5 * time.Minute

// Errors a caller branches on.
var (
	// ErrReleaseExpired means the manifest's expires time has passed: the
	// release repository is frozen or replaying an old release.
	ErrReleaseExpired = schema.Refused(errors.New("release expired"))
)

// Verify is [Trust.Verify] for a reader that trusts only pinned.
func Verify(b *Bundle, pinned *schema.Root, now time.Time) (*Verified, error) {
	return NewTrust(pinned).Verify(b, now)
}

// Verify checks bundle b against t at time now: the root chain in the
// commit (roots t trusts must be the very roots it trusts; each later
// root-(N+1) signed by root-N's and its own threshold, read only once root
// N is verified), the newest root's threshold over release.toml (checked
// before it is parsed), the manifest's own validity, its root_version, and
// its expiry. It does not check version order; that is the caller's (the
// agent against its persisted state, verify against the history). The
// roots beyond t's newest are in the result's NewRoots, for [Trust.Accept].
// Every error it returns is a refusal (schema.ErrRefused).
func (t *Trust) Verify(b *Bundle, now time.Time) (*Verified, error) {
	v, err := t.verify(b, now)
	return v, schema.Refused(err)
}

func (t *Trust) verify(b *Bundle, now time.Time) (*Verified, error) {
	root, fresh, err := t.rootChain(b)
	if err != nil {
		return nil, fmt.Errorf("release commit %s: %w", short(b.Commit), err)
	}
	if err := root.CheckExpiry(now); err != nil {
		return nil, fmt.Errorf("release commit %s: %w", short(b.Commit), err)
	}
	res, err := schema.VerifySigned(root, ManifestPath, b.Manifest, b.Sig, now)
	if err != nil {
		return nil, fmt.Errorf("release commit %s: %w", short(b.Commit), err)
	}
	rel, err := schema.ParseRelease(ManifestPath, b.Manifest)
	if err != nil {
		return nil, fmt.Errorf("release commit %s: %w", short(b.Commit), err)
	}
	if rel.RootVersion != root.Version {
		return nil, fmt.Errorf("verify release %d: signed for root %d, but the newest trusted root is %d", rel.Version, rel.RootVersion, root.Version)
	}
	if !now.Before(rel.Expires) {
		return nil, fmt.Errorf("verify release %d: %w at %s (a newer release must be cut, or the repository is frozen)", rel.Version, ErrReleaseExpired, rel.Expires.Format(time.RFC3339))
	}
	if rel.Created.After(now.Add(MaxClockSkew)) {
		return nil, fmt.Errorf("verify release %d: created %s, in the future (check this host's clock)", rel.Version, rel.Created.Format(time.RFC3339))
	}
	sum := sha256.Sum256(b.Manifest)
	return &Verified{Commit: b.Commit, Manifest: b.Manifest, ManifestSHA256: hex.EncodeToString(sum[:]),
		Release: rel, Root: root, Signatures: res, NewRoots: fresh}, nil
}

// ReadImageIndex reads images/<name>.toml from commit, checking it against
// the sha256 and length the verified manifest pins.
func ReadImageIndex(st *repo.Store, commit plumbing.Hash, img schema.ReleaseImage) (*schema.ImageIndex, error) {
	p := ImagesDir + "/" + img.Name + ".toml"
	data, err := st.ReadFile(commit, p, img.IndexLength)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Name, err)
	}
	if err := checkDigest(p, data, img.IndexSHA256, img.IndexLength); err != nil {
		return nil, err
	}
	idx, err := schema.ParseImageIndex(p, data)
	if err != nil {
		return nil, err
	}
	if idx.Digest != img.Digest {
		return nil, schema.Refused(fmt.Errorf("%s: describes image %s, the manifest pins %s", p, idx.Digest, img.Digest))
	}
	return idx, nil
}

// ReadNodeFile reads nodes/<node>/<f.Path> from commit, checking it against
// the manifest's sha256 and length.
func ReadNodeFile(st *repo.Store, commit plumbing.Hash, node string, f schema.File) ([]byte, error) {
	p := NodesDir + "/" + node + "/" + f.Path
	data, err := st.ReadFile(commit, p, f.Length)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", node, err)
	}
	if err := checkDigest(p, data, f.SHA256, f.Length); err != nil {
		return nil, err
	}
	return data, nil
}

// DigestMismatchError reports content that differs from what a signed
// manifest pins.
type DigestMismatchError struct {
	What            string
	Want, Got       string
	WantLen, GotLen int64
}

// Is makes a DigestMismatchError a refusal (schema.ErrRefused).
func (e *DigestMismatchError) Is(target error) bool { return target == schema.ErrRefused }

func (e *DigestMismatchError) Error() string {
	if e.WantLen != e.GotLen {
		return fmt.Sprintf("%s: %d bytes, the signed manifest says %d", e.What, e.GotLen, e.WantLen)
	}
	return fmt.Sprintf("%s: sha256 %s, the signed manifest says %s", e.What, shortHex(e.Got), shortHex(e.Want))
}

func checkDigest(what string, data []byte, want string, length int64) error {
	sum := sha256.Sum256(data)
	got := hex.EncodeToString(sum[:])
	if int64(len(data)) != length || got != want {
		return &DigestMismatchError{What: what, Want: want, Got: got, WantLen: length, GotLen: int64(len(data))}
	}
	return nil
}

func short(h plumbing.Hash) string { return h.String()[:12] }

func shortHex(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
