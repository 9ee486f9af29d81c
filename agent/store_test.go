package agent_test

import (
	"crypto/rand"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/pullship/pullship/agent"

	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
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

// TestStoreBudget: a release whose new image does not fit in what the
// object store's budget (store_budget_mib) leaves is not applied: the
// pass fails with an error naming the budget, the node keeps running the
// release before (container, files), and the store stays within its
// budget, holding no more than before the fetch. Raised, the budget lets
// the same release through. From a directory remote and from git
// daemon: the image is not begun (before, its first segment stayed while
// the second was refused).
func TestStoreBudget(t *testing.T) {
	for _, remote := range []string{"directory", "git daemon"} {
		t.Run(remote, func(t *testing.T) {
			h := newHost(t)
			if remote == "git daemon" {
				h.setRemotes(gittest.Daemon(t, h.env.Dir).URL + "/releases.git")
			}
			ping := `["/pingsrv", "ping"]`
			h.release(h.image("a"), "version = 1\nnode = {{.Node}}\n", ping)
			if out, err := h.once(); err != nil || out != agent.Converged {
				t.Fatalf("release 1: %v %v\n%s", out, err, h.log.String())
			}
			// An image with 4 MiB of its own (random: zstd keeps its size).
			big := make([]byte, 4<<20)
			rand.Read(big)
			p, id := bundlertest.WriteImage(t, filepath.Join(h.env.Dir, "img-big.tar"),
				imagetest.File{Path: "pingsrv", Mode: 0o755, Data: h.pingsrv},
				imagetest.File{Path: "big", Data: big})
			h.images = append(h.images, id)
			h.release(p, "version = 2\nnode = {{.Node}}\n", ping)
			before := h.storeBytes()
			h.cfg.StoreBudgetMiB = before>>20 + 2 // what is there, and 1-2 MiB more
			snap := h.snap()
			out, err := h.once()
			after := h.storeBytes()
			t.Logf("budget %d MiB: store %d bytes before, %d after; %v %v", h.cfg.StoreBudgetMiB, before, after, out, err)
			if err == nil || !errors.Is(err, repo.ErrStoreBudget) || !strings.Contains(err.Error(), "store_budget_mib") {
				t.Fatalf("release 2 beyond the budget: %v %v, want an error naming the budget\n%s", out, err, h.log.String())
			}
			h.unchanged(t, snap, false)
			if after > h.cfg.StoreBudget() {
				t.Errorf("the store holds %d bytes, over its budget of %d", after, h.cfg.StoreBudget())
			}
			if after > before+64<<10 {
				t.Errorf("the store grew from %d to %d bytes", before, after)
			}

			h.cfg.StoreBudgetMiB = config.DefaultStoreBudgetMiB
			m := agent.NewMetrics(nil)
			if out, _, err := h.onceWith(m); err != nil || out != agent.Converged {
				t.Fatalf("release 2 within the budget: %v %v\n%s", out, err, h.log.String())
			}
			// What the metrics say is what the disk holds.
			gauge := func(g interface{ Write(*dto.Metric) error }) float64 {
				var d dto.Metric
				must(t, g.Write(&d))
				return d.GetGauge().GetValue()
			}
			if got, want := gauge(m.StoreBytes), float64(h.storeBytes()); got != want {
				t.Errorf("pullship_object_store_bytes %v, the store holds %v", got, want)
			}
			if got := gauge(m.StoreBudget); got != float64(config.DefaultStoreBudgetMiB<<20) {
				t.Errorf("pullship_object_store_budget_bytes %v", got)
			}
			if c := h.container(); c.ImageID != id {
				t.Fatalf("release 2 not applied: container runs %s", c.ImageID)
			}
			t.Logf("release 2 applied: store %d bytes", h.storeBytes())
		})
	}
}
