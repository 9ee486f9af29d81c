package agent_test

import (
	"crypto/rand"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
)

// storeBytes is the size of the agent's object store on disk.
func (h *host) storeBytes() int64 {
	h.t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(h.cfg.StateDir, "objects"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	must(h.t, err)
	return n
}

// TestJunkCannotGrowStore: a hostile mirror listed before a good origin
// serves, at every poll, a new release signed by an unknown key that
// carries 1 MiB of junk. Each is fetched (the agent must read it to refuse
// it), refused, and removed again at the end of the poll, although the
// origin's release verified in the same poll: the store stays within
// 64 KiB of its size before the attack. Before, the store was collected
// only after a poll that refused every remote, and grew by the junk at
// every poll. A release with a new image then drops the old image's tag
// and the packs only it reached.
func TestJunkCannotGrowStore(t *testing.T) {
	h := newHost(t)
	ping := `["/pingsrv", "ping"]`
	h.release(h.image("a"), "version = 1\nnode = {{.Node}}\n", ping)
	origin := h.env.Repo
	hostile := filepath.Join(h.env.Dir, "hostile.git")
	h.mirror(origin, hostile)
	h.setRemotes(hostile, origin)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 1: %v %v\n%s", out, err, h.log.String())
	}
	before := h.storeBytes()
	mallory := bundlertest.NewKey(t, h.env.Dir, "mallory")
	for i := range 4 {
		junk := make([]byte, 1<<20)
		rand.Read(junk)
		h.env.Repo = hostile // forge writes into the hostile mirror
		h.forge(forgery{signers: []*bundlertest.Key{mallory}, files: map[string][]byte{"junk.bin": junk}})
		h.env.Repo = origin
		out, err := h.once()
		if err != nil || out != agent.Nothing {
			t.Fatalf("poll %d: %v %v\n%s", i, out, err, h.log.String())
		}
		if got := h.storeBytes(); got > before+64<<10 {
			t.Fatalf("poll %d: the object store grew from %d to %d bytes", i, before, got)
		}
	}

	h.release(h.image("b"), "version = 1\nnode = {{.Node}}\n", ping)
	h.setRemotes(origin)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 2: %v %v\n%s", out, err, h.log.String())
	}
	st, err := repo.OpenStore(filepath.Join(h.cfg.StateDir, "objects"))
	must(t, err)
	refs, err := st.Refs()
	must(t, err)
	if _, ok := refs[bundle.ImageTag(h.images[0])]; ok {
		t.Errorf("the tag of the image no release runs is still in the store")
	}
	if _, ok := refs[bundle.ImageTag(h.images[1])]; !ok {
		t.Errorf("the tag of the running image is gone: %v", refs)
	}
}
