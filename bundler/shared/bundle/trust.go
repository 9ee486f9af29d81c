package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/pullship/pullship/bundler/shared/atomicfile"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/pullship/pullship/schema"
)

// Trust is what a reader of a release repository trusts, as TUF's client
// workflow keeps it: the root pinned out of band and every root accepted
// after it, each verified as its predecessor's successor when it was
// accepted. Chain walks start from the newest trusted root, and a release
// tree whose root-N differs from the trusted root N is refused: whoever
// holds the keys of a superseded root cannot fork the chain.
type Trust struct {
	Pinned *schema.Root
	// Roots are the accepted roots pinned.Version+1, +2, … in order.
	Roots []TrustedRoot
	dir   string // where Save writes (empty: not persisted)
}

// TrustedRoot is one accepted root and its exact bytes.
type TrustedRoot struct {
	Root *schema.Root
	Data []byte
}

// ErrRootFork marks a release tree whose root-N is not the root N this
// reader accepted before: a fork of the trust chain. It is a refusal.
var ErrRootFork = errors.New("trust chain forked")

// NewTrust is the trust of a reader with nothing accepted beyond pinned.
func NewTrust(pinned *schema.Root) *Trust { return &Trust{Pinned: pinned} }

// OpenTrust reads the roots accepted beyond pinned from dir (root-N.toml
// files written by [Trust.Accept]; a missing dir is none). Files at or below
// pinned's version are ignored (the operator pinned a newer root since); the
// rest must run consecutively from pinned.Version+1 and each must be the
// successor of the one before.
func OpenTrust(dir string, pinned *schema.Root) (*Trust, error) {
	t := &Trust{Pinned: pinned, dir: dir}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trusted roots: %w", err)
	}
	var ns []int64
	for _, e := range ents {
		if n, ok := RootNumber(e.Name()); ok && n > pinned.Version {
			ns = append(ns, n)
		}
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	cur := pinned
	for _, n := range ns {
		if n != cur.Version+1 {
			return nil, fmt.Errorf("trusted roots in %s: root %d follows root %d", dir, n, cur.Version)
		}
		p := filepath.Join(dir, schema.RootFileName(n))
		data, err := readCapped(p, schema.MaxRootFileLen)
		if err != nil {
			return nil, fmt.Errorf("trusted roots: %w", err)
		}
		r, err := schema.ParseRoot(p, data)
		if err != nil {
			return nil, fmt.Errorf("trusted roots: %w", err)
		}
		if r.Version != n {
			return nil, fmt.Errorf("trusted roots: %s holds root %d", p, r.Version)
		}
		t.Roots = append(t.Roots, TrustedRoot{Root: r, Data: data})
		cur = r
	}
	return t, nil
}

// Newest is the newest trusted root.
func (t *Trust) Newest() *schema.Root {
	if len(t.Roots) == 0 {
		return t.Pinned
	}
	return t.Roots[len(t.Roots)-1].Root
}

// root returns trusted root n (pinned's version or above), if trusted.
func (t *Trust) root(n int64) (*TrustedRoot, bool) {
	i := n - t.Pinned.Version - 1
	if i < 0 || i >= int64(len(t.Roots)) {
		return nil, false
	}
	return &t.Roots[i], true
}

// Accept adds the roots v verified beyond t's newest to t, and, when t was
// opened from a directory, writes each there durably before returning.
func (t *Trust) Accept(v *Verified) error {
	for _, f := range v.NewRoots {
		r, err := schema.ParseRoot(f.Name, f.Data)
		if err != nil {
			return err
		}
		if r.Version != t.Newest().Version+1 {
			continue // accepted already
		}
		if t.dir != "" {
			if err := writeDurably(filepath.Join(t.dir, schema.RootFileName(r.Version)), f.Data); err != nil {
				return fmt.Errorf("trust root %d: %w", r.Version, err)
			}
		}
		t.Roots = append(t.Roots, TrustedRoot{Root: r, Data: f.Data})
	}
	return nil
}

// rootChain verifies b's root chain against t: every root-N of b's tree
// that t trusts must be exactly t's root N (compared by git blob id, so
// they are not read); the walk starts from the newest trusted root at or
// below b's newest root and reads each later root (bounded, with its .sig)
// only after the one before verified it. It returns the newest root and the
// roots beyond t's newest, verified.
func (t *Trust) rootChain(b *Bundle) (*schema.Root, []schema.SignedFile, error) {
	top := int64(0)
	for n, e := range b.rootEnts {
		if n > top {
			top = n
		}
		if tr, ok := t.root(n); ok && e.data != plumbing.ComputeHash(plumbing.BlobObject, tr.Data) {
			sum := sha256.Sum256(tr.Data)
			return nil, nil, schema.Refused(fmt.Errorf("%w: root/%s is not the root %d trusted here (sha256 %.12s): refused",
				ErrRootFork, schema.RootFileName(n), n, hex.EncodeToString(sum[:])))
		}
	}
	cur := t.Pinned
	if tr, ok := t.root(min(top, t.Newest().Version)); ok {
		cur = tr.Root
	}
	var fresh []schema.SignedFile
	for n := cur.Version + 1; n <= top; n++ {
		e, ok := b.rootEnts[n]
		if !ok {
			return nil, nil, fmt.Errorf("root chain: no root/%s before root %d (versions must be consecutive)", schema.RootFileName(n), top)
		}
		f, err := b.readRoot(n, e)
		if err != nil {
			return nil, nil, err
		}
		r, err := schema.VerifyRootUpdate(cur, f)
		if err != nil {
			return nil, nil, err
		}
		if n > t.Newest().Version {
			fresh = append(fresh, f)
		}
		cur = r
	}
	return cur, fresh, nil
}

func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > max {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, max)
	}
	data := make([]byte, fi.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// writeDurably writes a file with atomicfile, so a crash leaves it whole
// or absent.
func writeDurably(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, bytes.NewReader(data), 0o600)
}
