package agent_test

// The adversarial suite: attacks on a host that has applied a good release,
// mounted the way an attacker on a git server, a mirror or a USB disk would
// (rewritten trees, re-pointed refs, corrupted objects), plus signed-but-
// wrong releases the agent's own checks must catch. Each case checks the
// error a user sees and that nothing on the host changed: the node's file,
// its container, the attacker's image, and the agent's persisted state.
// docs/security.md is the threat model these rows prove.

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// snapshot is what must not change on the host when an attack fails.
type snapshot struct {
	conf      []byte
	state     []byte
	container engine.ContainerState
}

func (h *host) statePath() string { return filepath.Join(h.cfg.StateDir, "state.toml") }

func (h *host) snap() snapshot {
	h.t.Helper()
	st, err := os.ReadFile(h.statePath())
	must(h.t, err)
	return snapshot{conf: []byte(h.conf()), state: st, container: h.container()}
}

// unchanged fails t when the host differs from before; the state file is
// compared only when checkState (a documented exception otherwise).
func (h *host) unchanged(t *testing.T, before snapshot, checkState bool) {
	t.Helper()
	after := h.snap()
	if !bytes.Equal(after.conf, before.conf) {
		t.Errorf("node file changed: %q, was %q", after.conf, before.conf)
	}
	b, a := before.container, after.container
	if a.ID != b.ID || a.ImageID != b.ImageID || !a.Running || !a.StartedAt.Equal(b.StartedAt) {
		t.Errorf("container changed: id %.12s→%.12s image %.19s→%.19s running=%v started %v→%v",
			b.ID, a.ID, b.ImageID, a.ImageID, a.Running, b.StartedAt, a.StartedAt)
	}
	if checkState && !bytes.Equal(after.state, before.state) {
		t.Errorf("state.toml changed:\n%s\nwas:\n%s", after.state, before.state)
	}
}

// onceAt runs one agent pass with the clock at now (zero: real time).
func (h *host) onceAt(now time.Time) (agent.Outcome, error) {
	var clock func() time.Time
	if !now.IsZero() {
		clock = func() time.Time { return now }
	}
	a := openAgent(h.t, h.cfg, agent.Options{Engine: h.eng, Clock: clock, Logger: slog.New(slog.NewTextHandler(&h.log, nil))})
	defer a.Close()
	return a.Once(context.Background())
}

// server opens the release repository directly, as an attacker with write
// access to the server's disk would.
func (h *host) server() *repo.Store {
	h.t.Helper()
	st, err := repo.OpenStore(h.env.Repo)
	must(h.t, err)
	return st
}

func (h *host) head() plumbing.Hash {
	h.t.Helper()
	id, err := h.server().Ref(bundle.ReleasesRef)
	must(h.t, err)
	return id
}

// point force-pushes refs/heads/releases (or any ref) to id.
func (h *host) point(ref string, id plumbing.Hash) {
	h.t.Helper()
	st := h.server()
	old, _ := st.Ref(ref)
	must(h.t, st.SetRef(ref, old, id))
}

// treeFiles lists every file of commit's tree by path.
func treeFiles(t *testing.T, st *repo.Store, commit plumbing.Hash) map[string]repo.TreeEntry {
	t.Helper()
	out := map[string]repo.TreeEntry{}
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := st.ListTree(commit, dir)
		must(t, err)
		for _, e := range ents {
			p := e.Name
			if dir != "" {
				p = dir + "/" + e.Name
			}
			if e.Mode == filemode.Dir {
				walk(p)
				continue
			}
			out[p] = e
		}
	}
	walk("")
	return out
}

// forgery describes a release commit written straight into the server's
// repository on top of a base release.
type forgery struct {
	base     plumbing.Hash // zero: the current head
	noParent bool
	// edit changes the manifest (read from base, version bumped, previous,
	// created and expires renewed) before it is encoded.
	edit func(rel *schema.Release)
	// raw edits the encoded manifest before it is signed; tamper after.
	raw, tamper func([]byte) []byte
	// signers sign the manifest; sigs, when set, is the .sig file instead.
	signers []*bundlertest.Key
	sigs    func(manifest []byte) []byte
	// files replace, add (non-nil) or delete (nil) tree files after signing.
	files map[string][]byte
}

// forge writes f into the server's repository, points releases at it and
// returns the commit.
func (h *host) forge(f forgery) plumbing.Hash {
	t := h.t
	t.Helper()
	st := h.server()
	base := f.base
	if base.IsZero() {
		base = h.head()
	}
	m0, err := st.ReadFile(base, bundle.ManifestPath, schema.MaxFileSize)
	must(t, err)
	rel, err := schema.ParseRelease(bundle.ManifestPath, m0)
	must(t, err)
	sum := sha256.Sum256(m0)
	rel.Version++
	rel.Previous = hex.EncodeToString(sum[:])
	rel.Created = time.Now().UTC().Truncate(time.Second)
	rel.Expires = rel.Created.Add(14 * 24 * time.Hour)
	if f.edit != nil {
		f.edit(rel)
	}
	manifest, err := rel.Encode()
	must(t, err)
	if f.raw != nil {
		manifest = f.raw(manifest)
	}
	var sig []byte
	if f.sigs != nil {
		sig = f.sigs(manifest)
	} else {
		sig = signFile(t, manifest, f.signers...)
	}
	if f.tamper != nil {
		manifest = f.tamper(manifest)
	}
	files := map[string][]byte{bundle.ManifestPath: manifest, schema.SigFileName(bundle.ManifestPath): sig}
	for p, b := range f.files {
		files[p] = b
	}
	objs := repo.NewObjectStream(nil)
	tb := repo.NewTreeBuilder()
	for p, e := range treeFiles(t, st, base) {
		if _, ok := files[p]; !ok {
			must(t, tb.Add(p, e.Mode, e.ID))
		}
	}
	for p, b := range files {
		if b != nil {
			must(t, tb.Add(p, filemode.Regular, objs.AddBytes(plumbing.BlobObject, b)))
		}
	}
	tree, err := tb.Build(objs)
	must(t, err)
	var parents []plumbing.Hash
	if !f.noParent {
		parents = []plumbing.Hash{base}
	}
	who := repo.Signature{Name: "mallory", Email: "mallory@localhost", When: time.Now()}
	data, commit, err := repo.EncodeCommit(repo.Commit{Tree: tree, Parents: parents, Author: who, Committer: who, Message: "forged\n"})
	must(t, err)
	objs.AddBytes(plumbing.CommitObject, data)
	must(t, st.Write(context.Background(), objs))
	h.point(bundle.ReleasesRef, commit)
	return commit
}

// signFile is the .sig of data by signers (each once).
func signFile(t *testing.T, data []byte, signers ...*bundlertest.Key) []byte {
	t.Helper()
	var sigs schema.SignatureFile
	for _, k := range signers {
		s, err := schema.SignWith(k.Signer, data)
		must(t, err)
		sigs.Add(s)
	}
	return sigs.Encode()
}

// rootFile encodes root version with keys and threshold, expiring at expires.
func rootFile(t *testing.T, version int64, threshold int, expires time.Time, keys ...*bundlertest.Key) []byte {
	t.Helper()
	r := &schema.Root{Version: version, Expires: expires.UTC().Truncate(time.Second), Threshold: threshold}
	for _, k := range keys {
		rk, err := schema.NewRootKey(k.PubPEM)
		must(t, err)
		r.Keys = append(r.Keys, rk)
	}
	data, err := r.Encode()
	must(t, err)
	return data
}

// withRoot adds root/root-N.toml and its .sig to a forgery's files.
func withRoot(files map[string][]byte, n int64, data, sig []byte) map[string][]byte {
	if files == nil {
		files = map[string][]byte{}
	}
	name := bundle.RootDir + "/" + schema.RootFileName(n)
	files[name], files[schema.SigFileName(name)] = data, sig
	return files
}

// nodeFile is the tree path and manifest entry of the host's node file in commit.
func (h *host) nodeFile(commit plumbing.Hash) (string, schema.File) {
	h.t.Helper()
	b, err := bundle.Read(h.server(), commit)
	must(h.t, err)
	rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
	must(h.t, err)
	rn, ok := rel.Node(h.node)
	if !ok || len(rn.Files) != 1 {
		h.t.Fatalf("release has no single file for node %s", h.node)
	}
	return bundle.NodesDir + "/" + h.node + "/" + rn.Files[0].Path, rn.Files[0]
}

// imageIndex is the image index of commit's only image, read from the server.
func (h *host) imageIndex(commit plumbing.Hash) (*schema.ImageIndex, []byte) {
	h.t.Helper()
	st := h.server()
	b, err := bundle.Read(st, commit)
	must(h.t, err)
	rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest)
	must(h.t, err)
	idx, err := bundle.ReadImageIndex(st, commit, rel.Images[0])
	must(h.t, err)
	data, err := st.ReadFile(commit, bundle.ImagesDir+"/"+rel.Images[0].Name+".toml", schema.MaxFileSize)
	must(h.t, err)
	return idx, data
}

// newChunk returns a chunk of idx that is not in old (one the host must fetch).
func newChunk(t *testing.T, idx, old *schema.ImageIndex) schema.Chunk {
	t.Helper()
	have := map[string]bool{}
	for _, c := range bundle.NewChunkSet(old).List() {
		have[c.Blob] = true
	}
	for _, c := range bundle.NewChunkSet(idx).List() {
		if !have[c.Blob] {
			return c
		}
	}
	t.Fatal("the new image shares every chunk with the old one")
	return schema.Chunk{}
}

// corruptBlob rewrites blob id in the bare repository dir as a loose object
// holding other bytes of the same size, keeping its name: what a bit flip
// on the server's disk or a malicious admin does. Packs are exploded first
// so that the loose object is the only copy.
func corruptBlob(t *testing.T, dir string, id plumbing.Hash, size int64) {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	tmp := t.TempDir()
	for _, p := range packs {
		moved := filepath.Join(tmp, filepath.Base(p))
		must(t, os.Rename(p, moved))
		os.Remove(strings.TrimSuffix(p, ".pack") + ".idx")
		os.Remove(strings.TrimSuffix(p, ".pack") + ".rev")
		f, err := os.Open(moved)
		must(t, err)
		cmd := exec.Command("git", "unpack-objects", "-q")
		cmd.Dir, cmd.Stdin = dir, f
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git unpack-objects: %v: %s", err, out)
		}
		f.Close()
	}
	loose := filepath.Join(dir, "objects", id.String()[:2], id.String()[2:])
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	fmt.Fprintf(zw, "blob %d\x00", size)
	zw.Write(bytes.Repeat([]byte{'M'}, int(size)))
	must(t, zw.Close())
	os.Chmod(loose, 0o644)
	must(t, os.WriteFile(loose, z.Bytes(), 0o444))
}

// attack is one row of the table.
type attack struct {
	name  string
	mount func(t *testing.T)
	at    time.Time // the host's clock; zero: now
	// want is a substring of the error; "" expects no error and no change.
	want string
	is   error
	as   any // pointer to an error type for errors.As
	// stateMoves documents a case where the agent rightly persists a
	// genuinely signed release as accepted although it cannot apply it.
	stateMoves bool
	// image is an image ID the attack tries to get loaded.
	image string
	// named, when set by mount, must appear in the error too (a chunk id).
	named *string
}

func (h *host) run(t *testing.T, good plumbing.Hash, attacks []attack) {
	ctx := context.Background()
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			before := h.snap()
			defer func() {
				// Restore the server and the state for the next row.
				h.point(bundle.ReleasesRef, good)
				must(t, os.WriteFile(h.statePath(), before.state, 0o600))
			}()
			at.mount(t)
			out, err := h.onceAt(at.at)
			switch {
			case at.want == "":
				if err != nil || out != agent.Nothing {
					t.Fatalf("once: %v %v, want nothing to do", out, err)
				}
			case err == nil:
				t.Fatalf("once: %v, no error; want %q", out, at.want)
			default:
				t.Logf("error seen: %v", err)
				if !strings.Contains(err.Error(), at.want) {
					t.Errorf("error %q does not say %q", err, at.want)
				}
				if at.is != nil && !errors.Is(err, at.is) {
					t.Errorf("error is not %v", at.is)
				}
				if at.named != nil && !strings.Contains(err.Error(), *at.named) {
					t.Errorf("error %q does not name %q", err, *at.named)
				}
				if at.as != nil && !errors.As(err, at.as) {
					t.Errorf("error is not a %T", at.as)
				}
				if !at.stateMoves && !errors.Is(err, agent.ErrVerify) && !errors.As(err, new(*engine.ImageMismatchError)) {
					t.Errorf("error does not wrap agent.ErrVerify")
				}
			}
			h.unchanged(t, before, !at.stateMoves)
			if at.image != "" {
				if has, err := h.eng.HasImage(ctx, at.image); err != nil || has {
					t.Errorf("attacker's image %s loaded: %v %v", at.image, has, err)
				}
			}
		})
	}
}

func TestAdversarialAgent(t *testing.T) {
	h := newHost(t)
	ping := `["/pingsrv", "ping"]`
	h.release(h.image("a"), "version = 1\nnode = {{.Node}}\n", ping)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 1: %v %v", out, err)
	}
	rel1 := h.head()
	k1 := h.env.Key
	k2 := bundlertest.NewKey(t, h.env.Dir, "release2")
	k3 := bundlertest.NewKey(t, h.env.Dir, "release3")
	mallory := bundlertest.NewKey(t, h.env.Dir, "mallory")
	nodePath, nodeEntry := h.nodeFile(rel1)
	idxA, idxAData := h.imageIndex(rel1)
	now := time.Now()
	year := now.Add(365 * 24 * time.Hour)
	randomID := "sha256:" + strings.Repeat("ab", 32)
	var chunk string // set by the chunk attacks: what the error must name

	// Phase 1: the host follows root 1 (k1 alone) and runs release 1.
	h.run(t, rel1, []attack{
		// Integrity.
		{name: "unsigned release", want: "unsigned: no release.toml.sig",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, files: map[string][]byte{"release.toml.sig": nil}})
			}},
		{name: "signed by an unknown key", want: "0 of 1 required signatures valid: key " + mallory.ID[:12] + "… unknown",
			as:    new(*schema.ThresholdError),
			mount: func(t *testing.T) { h.forge(forgery{signers: []*bundlertest.Key{mallory}}) }},
		{name: "manifest altered after signing", want: "signature invalid",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, tamper: func(m []byte) []byte {
					return bytes.Replace(m, []byte(`restart = "`), []byte(`restart = "x`), 1)
				}})
			}},
		{name: "node file altered in the tree", want: "sha256", as: new(*bundle.DigestMismatchError), stateMoves: true,
			mount: func(t *testing.T) {
				evil := bytes.Repeat([]byte{'X'}, int(nodeEntry.Length))
				h.forge(forgery{signers: []*bundlertest.Key{k1}, files: map[string][]byte{nodePath: evil}})
			}},
		{name: "node file longer than declared", want: "exceeds the limit", stateMoves: true,
			mount: func(t *testing.T) {
				long := append([]byte(h.conf()), "\nevil = 1\n"...)
				h.forge(forgery{signers: []*bundlertest.Key{k1}, files: map[string][]byte{nodePath: long}})
			}},
		{name: "node file missing from the tree", want: "not found", stateMoves: true,
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, files: map[string][]byte{nodePath: nil}})
			}},
		{name: "image index altered in the tree", want: "images/", as: new(*bundle.DigestMismatchError), stateMoves: true,
			mount: func(t *testing.T) {
				p := bundle.ImagesDir + "/" + idxA.Name + ".toml"
				h.forge(forgery{signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) {
					r.Images[0].Digest = randomID // a new image, so that the index is read
				}, files: map[string][]byte{p: flipHex(t, idxAData, bundle.NewChunkSet(idxA).List()[0].SHA256)}})
			}, image: randomID},

		// Thresholds and key rotation, mounted as root-2 inside the release.
		{name: "root 2 needs 2 signatures, release has 1", want: "1 of 2 required signatures valid",
			mount: func(t *testing.T) {
				r2 := rootFile(t, 2, 2, year, k1, k2)
				h.forge(forgery{signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) { r.RootVersion = 2 },
					files: withRoot(nil, 2, r2, signFile(t, r2, k1, k2))})
			}},
		{name: "one key signs twice (duplicate signature)", want: "counted already",
			mount: func(t *testing.T) {
				r2 := rootFile(t, 2, 2, year, k1, k2)
				h.forge(forgery{edit: func(r *schema.Release) { r.RootVersion = 2 },
					sigs: func(m []byte) []byte {
						s1, err := schema.SignWith(k1.Signer, m)
						must(t, err)
						s2, err := schema.SignWith(k1.Signer, m)
						must(t, err)
						f := schema.SignatureFile{Signatures: []schema.Signature{s1, s2}}
						return f.Encode()
					},
					files: withRoot(nil, 2, r2, signFile(t, r2, k1, k2))})
			}},
		{name: "root lists a key twice", want: "listed twice",
			mount: func(t *testing.T) {
				r2 := rootFile(t, 2, 1, year, k1)
				i := bytes.Index(r2, []byte("[[key]]"))
				r2 = append(r2, append([]byte("\n"), r2[i:]...)...)
				r2 = bytes.Replace(r2, []byte("threshold = 1"), []byte("threshold = 2"), 1)
				h.forge(forgery{signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) { r.RootVersion = 2 },
					files: withRoot(nil, 2, r2, signFile(t, r2, k1))})
			}},
		{name: "root chain skips a version", want: "versions must be consecutive",
			mount: func(t *testing.T) {
				r3 := rootFile(t, 3, 1, year, mallory)
				h.forge(forgery{signers: []*bundlertest.Key{mallory}, edit: func(r *schema.Release) { r.RootVersion = 3 },
					files: withRoot(nil, 3, r3, signFile(t, r3, k1, mallory))})
			}},
		{name: "root 2 signed only by the old keys", want: "signatures by its own keys",
			mount: func(t *testing.T) {
				r2 := rootFile(t, 2, 1, year, mallory)
				h.forge(forgery{signers: []*bundlertest.Key{mallory}, edit: func(r *schema.Release) { r.RootVersion = 2 },
					files: withRoot(nil, 2, r2, signFile(t, r2, k1))})
			}},
		{name: "root 2 signed only by the new keys", want: "signatures by root 1's keys",
			mount: func(t *testing.T) {
				r2 := rootFile(t, 2, 1, year, mallory)
				h.forge(forgery{signers: []*bundlertest.Key{mallory}, edit: func(r *schema.Release) { r.RootVersion = 2 },
					files: withRoot(nil, 2, r2, signFile(t, r2, mallory))})
			}},
		{name: "key removed in root 2 signs the release", want: "key " + k1.ID[:12] + "… unknown",
			mount: func(t *testing.T) {
				r2 := rootFile(t, 2, 1, year, k2)
				h.forge(forgery{signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) { r.RootVersion = 2 },
					files: withRoot(nil, 2, r2, signFile(t, r2, k1, k2))})
			}},

		// Freshness.
		{name: "expired manifest (freeze)", at: now.Add(2 * time.Hour), want: "release expired", is: bundle.ErrReleaseExpired,
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) { r.Expires = r.Created.Add(time.Hour) }})
			}},
		{name: "expired root", at: now.Add(2 * time.Hour), want: "trust root expired", is: schema.ErrExpired,
			mount: func(t *testing.T) {
				r2 := rootFile(t, 2, 1, now.Add(time.Hour), k1)
				h.forge(forgery{signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) { r.RootVersion = 2 },
					files: withRoot(nil, 2, r2, signFile(t, r2, k1))})
			}},
		{name: "created in the future", want: "in the future",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) {
					r.Created = r.Created.Add(time.Hour)
					r.Expires = r.Created.Add(time.Hour)
				}})
			}},

		// Replay and unrelated history.
		{name: "release 1 replayed on an unrelated commit", want: "",
			mount: func(t *testing.T) {
				h.forge(forgery{base: rel1, noParent: true, edit: func(r *schema.Release) {}, raw: func([]byte) []byte {
					m, err := h.server().ReadFile(rel1, bundle.ManifestPath, schema.MaxFileSize)
					must(t, err)
					return m
				}, signers: []*bundlertest.Key{k1}})
			}},
		{name: "unrelated history from another fleet's key", want: "unknown",
			mount: func(t *testing.T) {
				h.forge(forgery{noParent: true, signers: []*bundlertest.Key{mallory}, edit: func(r *schema.Release) { r.Version = 1000 }})
			}},

		// Scope: signed by the real key, wrong for this host.
		{name: "manifest for other nodes only", want: "has no node",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) { r.Nodes[0].Name = "other" }})
			}},
		{name: "file target outside allowed_dirs", want: "outside allowed_dirs",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) {
					r.Nodes[0].Files[0].Target = filepath.Join(h.env.Dir, "outside", "app.conf")
				}})
			}},
		{name: "file target escaping with ..", want: "..",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, raw: func(m []byte) []byte {
					return bytes.Replace(m, []byte(nodeEntry.Target), []byte(h.etc+"/../outside/app.conf"), 1)
				}})
			}},
		{name: "node file path escaping with ..", want: "..",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, raw: func(m []byte) []byte {
					return bytes.Replace(m, []byte(`path = "`+nodeEntry.Path), []byte(`path = "../../`+nodeEntry.Path), 1)
				}})
			}},
		{name: "node file path absolute", want: "must be relative",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, raw: func(m []byte) []byte {
					return bytes.Replace(m, []byte(`path = "`+nodeEntry.Path), []byte(`path = "/etc/`+nodeEntry.Path), 1)
				}})
			}},
		{name: "node file path with NUL", want: "NUL",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1}, raw: func(m []byte) []byte {
					return bytes.Replace(m, []byte(`path = "`+nodeEntry.Path), []byte(`path = "x\u0000`+nodeEntry.Path), 1)
				}})
			}},

		// Docker import: the index names an image the chunks do not build.
		{name: "index claims another image ID", want: "instead; refusing it", as: new(*engine.ImageMismatchError), stateMoves: true,
			image: randomID,
			mount: func(t *testing.T) {
				forged := *idxA
				forged.Digest = randomID
				data, err := forged.Encode()
				must(t, err)
				sum := sha256.Sum256(data)
				h.forge(forgery{signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) {
					r.Images[0].Digest = randomID
					r.Images[0].IndexSHA256 = hex.EncodeToString(sum[:])
					r.Images[0].IndexLength = int64(len(data))
				}, files: map[string][]byte{bundle.ImagesDir + "/" + idxA.Name + ".toml": data}})
			}},

		// Chunks on the server: the image is new, so the host must load it.
		{name: "chunk corrupted on the server", want: "image", stateMoves: true, named: &chunk,
			mount: func(t *testing.T) {
				h.release(h.image("b"), "version = 1\nnode = {{.Node}}\n", ping)
				idx, _ := h.imageIndex(h.head())
				c := newChunk(t, idx, idxA)
				corruptBlob(t, h.env.Repo, plumbing.NewHash(c.Blob), c.Size)
				chunk = c.Blob[:12]
			}},
		{name: "chunk missing from the image tag", want: "image", stateMoves: true, named: &chunk,
			mount: func(t *testing.T) {
				h.release(h.image("c"), "version = 1\nnode = {{.Node}}\n", ping)
				idx, _ := h.imageIndex(h.head())
				c := newChunk(t, idx, idxA)
				st := h.server()
				tag := bundle.ImageTag(idx.Digest)
				tc, err := st.Ref(tag)
				must(t, err)
				var ents []repo.TreeEntry
				for _, e := range treeFiles(t, st, tc) {
					if e.ID.String() != c.Blob {
						ents = append(ents, e)
					}
				}
				objs := repo.NewObjectStream(nil)
				data, tree, err := repo.EncodeTree(ents)
				must(t, err)
				objs.AddBytes(plumbing.TreeObject, data)
				who := repo.Signature{Name: "mallory", Email: "mallory@localhost", When: time.Now()}
				cdata, commit, err := repo.EncodeCommit(repo.Commit{Tree: tree, Author: who, Committer: who, Message: "pruned\n"})
				must(t, err)
				objs.AddBytes(plumbing.CommitObject, cdata)
				must(t, st.Write(context.Background(), objs))
				h.point(tag, commit)
				// The agent asks for chunks by the ids the signed index
				// gives: the tag matters once the server no longer has them.
				dropUnreachable(t, h.env.Repo)
				chunk = c.SHA256[:12]
			}},
	})
	// Images b and c were refused: never loaded.
	for _, id := range h.images[1:] {
		if has, err := h.eng.HasImage(context.Background(), id); err != nil || has {
			t.Errorf("refused image %s loaded: %v %v", id, has, err)
		}
	}

	// A genuine release 2 (whose tarball carries a tag, as docker save
	// writes them: TestDockerLoadMovesNoTag shows what the engine does
	// with it).
	tagged, id := writeTaggedImage(t, h, "pullship-test/victim-"+h.node+":1")
	h.images = append(h.images, id)
	h.release(tagged, "version = 2\n", ping)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 2: %v %v", out, err)
	}
	if c := h.container(); c.ImageID != id {
		t.Fatalf("release 2 not applied: container runs %s", c.ImageID)
	}
	rel2 := h.head()

	// Rotation: root 2 (k1 and k2, threshold 2) arrives in a release both sign.
	r2 := rootFile(t, 2, 2, year, k1, k2)
	h.forge(forgery{signers: []*bundlertest.Key{k1, k2}, edit: func(r *schema.Release) { r.RootVersion = 2 },
		files: withRoot(nil, 2, r2, signFile(t, r2, k1, k2))})
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("valid root-2 chain: %v %v", out, err)
	}
	st, err := os.ReadFile(h.statePath())
	must(t, err)
	if !bytes.Contains(st, []byte("root_version = 2")) {
		t.Fatalf("state after rotation does not follow root 2:\n%s", st)
	}
	rel3 := h.head()

	// Phase 2: the host follows root 2 and runs release 3.
	h.run(t, rel3, []attack{
		{name: "fewer than k signatures after rotation", want: "1 of 2 required signatures valid",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k2}, edit: func(r *schema.Release) {}})
			}},
		{name: "force-push to release 1", want: "rollback refused",
			mount: func(t *testing.T) { h.point(bundle.ReleasesRef, rel1) }},
		{name: "force-push to release 2", want: "rollback refused",
			mount: func(t *testing.T) { h.point(bundle.ReleasesRef, rel2) }},
		{name: "equal version, other bytes", want: "replay refused",
			mount: func(t *testing.T) {
				h.forge(forgery{signers: []*bundlertest.Key{k1, k2}, edit: func(r *schema.Release) {
					r.Version--
					r.Nodes[0].Container.Env = map[string]string{"EVIL": "1"}
				}})
			}},
		{name: "old root's key signs a newer version on the old chain", want: "already follows root 2",
			mount: func(t *testing.T) {
				h.forge(forgery{base: rel1, signers: []*bundlertest.Key{k1}, edit: func(r *schema.Release) { r.Version = 10 }})
			}},
		{name: "thousands of status refs on the remote", want: "",
			mount: func(t *testing.T) {
				p := filepath.Join(h.env.Repo, "packed-refs")
				old, _ := os.ReadFile(p)
				var b bytes.Buffer
				b.Write(old)
				for i := range 5000 {
					fmt.Fprintf(&b, "%s refs/heads/status/flood-%05d\n", rel3, i)
				}
				must(t, os.WriteFile(p, b.Bytes(), 0o644))
				t.Cleanup(func() { os.WriteFile(p, old, 0o644) })
				start := time.Now()
				t.Cleanup(func() {
					if d := time.Since(start); d > 20*time.Second {
						t.Errorf("a pass took %v with 5000 refs advertised", d)
					}
				})
			}},
	})

	// A threshold of keys signs a huge version: the host accepts it (it is
	// signed) and from then on refuses every normal release.
	h.forge(forgery{signers: []*bundlertest.Key{k1, k2}, edit: func(r *schema.Release) { r.Version = 1 << 62 }})
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("huge version: %v %v", out, err)
	}
	huge := h.head()
	h.run(t, huge, []attack{
		{name: "after a huge version, the next normal release", want: "rollback refused",
			mount: func(t *testing.T) {
				h.forge(forgery{base: rel3, signers: []*bundlertest.Key{k1, k2}})
			}},
	})
	t.Run("recovery from a huge version by rotating the root", func(t *testing.T) {
		r3 := rootFile(t, 3, 2, year, k2, k3)
		h.forge(forgery{base: rel3, signers: []*bundlertest.Key{k2, k3}, edit: func(r *schema.Release) { r.RootVersion = 3 },
			files: withRoot(nil, 3, r3, signFile(t, r3, k1, k2, k3))})
		out, err := h.once()
		if err != nil || out != agent.Converged {
			t.Fatalf("release 4 under root 3: %v %v", out, err)
		}
	})
}

// TestDockerLoadMovesNoTag: a genuine release whose docker-save tarball
// carries a tag that an image on the host already has: the load must not
// move that tag.
func TestDockerLoadMovesNoTag(t *testing.T) {
	h := newDockerHost(t)
	ping := `["/pingsrv", "ping"]`
	h.release(h.image("a"), "version = 1\n", ping)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 1: %v %v", out, err)
	}
	victim := "pullship-test/victim-" + h.node + ":1"
	docker(t, "tag", h.images[0], victim)
	t.Cleanup(func() { exec.Command("docker", "rmi", victim).Run() })
	tagged, id := writeTaggedImage(t, h, victim)
	h.images = append(h.images, id)
	h.release(tagged, "version = 2\n", ping)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release with a tagged tarball: %v %v", out, err)
	}
	if got := docker(t, "image", "inspect", "--format", "{{.Id}}", victim); got != h.images[0] {
		t.Fatalf("loading a tarball tagged %s retagged it: now %s, was %s", victim, got, h.images[0])
	}
	if c := h.container(); c.ImageID != id {
		t.Fatalf("tagged release not applied: container runs %s", c.ImageID)
	}
}

// docker runs the docker CLI and returns its trimmed output.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// writeTaggedImage writes a pingsrv image tarball whose manifest.json tags
// it ref, and returns its path and ID.
func writeTaggedImage(t *testing.T, h *host, ref string) (string, string) {
	p := filepath.Join(h.env.Dir, "img-tagged.tar")
	b, err := imagetest.WriteFile(p, imagetest.Image{Layers: [][]imagetest.File{{
		{Path: "pingsrv", Mode: 0o755, Data: h.pingsrv}, {Path: "variant", Data: []byte("tagged")}}},
		Cmd: []string{"/app"}, RepoTags: []string{ref}})
	must(t, err)
	return p, b.ID
}

// flipHex changes the first digit of the hex string s where it occurs in data.
func flipHex(t *testing.T, data []byte, s string) []byte {
	t.Helper()
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		t.Fatalf("%.12s not found", s)
	}
	out := bytes.Clone(data)
	out[i] = "1032547698badcfe"[strings.IndexByte("0123456789abcdef", out[i])]
	return out
}
