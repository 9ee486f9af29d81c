package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
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

// Bundle is the signed part of one release commit, read but not yet trusted.
type Bundle struct {
	Commit   plumbing.Hash
	Manifest []byte // release.toml, exact bytes
	Sig      []byte // release.toml.sig
	Roots    []schema.SignedFile
}

// Read reads release.toml, its signatures and the root chain from
// commit in st, each bounded in size.
func Read(st *repo.Store, commit plumbing.Hash) (*Bundle, error) {
	b := &Bundle{Commit: commit}
	var err error
	if b.Manifest, err = st.ReadFile(commit, ManifestPath, schema.MaxFileSize); err != nil {
		return nil, fmt.Errorf("release commit %s: %w", short(commit), err)
	}
	if b.Sig, err = st.ReadFile(commit, schema.SigFileName(ManifestPath), schema.MaxFileSize); err != nil {
		if errors.Is(err, repo.ErrNotFound) {
			return nil, schema.Refused(fmt.Errorf("release commit %s: unsigned: no %s", short(commit), schema.SigFileName(ManifestPath)))
		}
		return nil, fmt.Errorf("release commit %s: %w", short(commit), err)
	}
	if b.Roots, err = ReadRoots(st, commit); err != nil {
		return nil, err
	}
	return b, nil
}

// MaxRoots bounds the root chain a commit may carry.
const MaxRoots = 1000

// ReadRoots returns the root-N.toml files (with their .sig) under root/ in
// commit, ordered by N. Any other entry there is an error.
func ReadRoots(st *repo.Store, commit plumbing.Hash) ([]schema.SignedFile, error) {
	ents, err := st.ListTree(commit, RootDir)
	if err != nil {
		return nil, fmt.Errorf("release commit %s: %w", short(commit), err)
	}
	if len(ents) > 2*MaxRoots {
		return nil, fmt.Errorf("release commit %s: %d entries under root/ (at most %d roots)", short(commit), len(ents), MaxRoots)
	}
	byN := map[int64]string{}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name] = true
	}
	for _, e := range ents {
		base, isSig := strings.CutSuffix(e.Name, ".sig")
		n, ok := RootNumber(base)
		if !ok {
			return nil, fmt.Errorf("release commit %s: unexpected file root/%s", short(commit), e.Name)
		}
		if isSig {
			if !names[base] {
				return nil, fmt.Errorf("release commit %s: root/%s without root/%s", short(commit), e.Name, base)
			}
			continue
		}
		byN[n] = e.Name
	}
	ns := make([]int64, 0, len(byN))
	for n := range byN {
		ns = append(ns, n)
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	out := make([]schema.SignedFile, 0, len(ns))
	for _, n := range ns {
		name := byN[n]
		data, err := st.ReadFile(commit, RootDir+"/"+name, schema.MaxFileSize)
		if err != nil {
			return nil, fmt.Errorf("release commit %s: %w", short(commit), err)
		}
		sig, err := st.ReadFile(commit, RootDir+"/"+schema.SigFileName(name), schema.MaxFileSize)
		if err != nil && !errors.Is(err, repo.ErrNotFound) {
			return nil, fmt.Errorf("release commit %s: %w", short(commit), err)
		}
		out = append(out, schema.SignedFile{Name: name, Data: data, Sig: sig})
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
}

// MaxClockSkew is how far in the future a release's created time may lie.
const MaxClockSkew = 5 * time.Minute

// Errors a caller branches on.
var (
	// ErrReleaseExpired means the manifest's expires time has passed: the
	// release repository is frozen or replaying an old release.
	ErrReleaseExpired = schema.Refused(errors.New("release expired"))
)

// Verify checks bundle b against the pinned root at time now: the root
// chain in the commit (each root-(N+1) signed by root-N's and its own
// threshold; roots at or below pinned's version are ignored), the newest
// root's threshold over release.toml, the manifest's own validity, its
// root_version, and its expiry. It does not check version order; that is
// the caller's (the agent against its persisted state, verify against the
// history). Every error it returns is a refusal (schema.ErrRefused).
func Verify(b *Bundle, pinned *schema.Root, now time.Time) (*Verified, error) {
	v, err := verify(b, pinned, now)
	return v, schema.Refused(err)
}

func verify(b *Bundle, pinned *schema.Root, now time.Time) (*Verified, error) {
	var next []schema.SignedFile
	for _, f := range b.Roots {
		n, _ := RootNumber(f.Name)
		if n > pinned.Version {
			next = append(next, f)
		}
	}
	root, err := schema.VerifyRootChain(pinned, next, now)
	if err != nil {
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
		Release: rel, Root: root, Signatures: res}, nil
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
