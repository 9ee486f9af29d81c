package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/engine/enginetest"
	"github.com/pullship/pullship/agent/secrets"
	"github.com/pullship/pullship/agent/state"
	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo"
)

// fsHost is a host on the fake engine whose container can change the files
// under its bind mount (etc/app) while its health is checked, as a hostile
// container can: the attacks on the agent's host file operations.
type fsHost struct {
	t       *testing.T
	env     *bundlertest.Env
	node    string
	etc     string // the allowed dir; etc/app is the container's bind mount
	outside string // a host directory outside allowed_dirs
	cfg     *config.Config
	eng     *enginetest.Fake
	key     *bundlertest.Key // the node's status key
	img     string
	log     bytes.Buffer
	// onUnhealthy runs when the failing health command runs: the container
	// acting between apply and rollback.
	onUnhealthy func()
}

func newFSHost(t *testing.T) *fsHost {
	h := &fsHost{t: t, env: bundlertest.NewEnv(t), node: "n" + randHex(4), eng: enginetest.NewFake()}
	h.etc = filepath.Join(h.env.Dir, "etc")
	h.outside = filepath.Join(h.env.Dir, "outside")
	must(t, os.MkdirAll(h.outside, 0o755))
	h.key = bundlertest.NewKey(t, h.env.Dir, "node")
	cfgPath := filepath.Join(h.env.Dir, "agent.toml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`remotes = [%q]
root = %q
state_dir = %q
allowed_dirs = [%q]

[[node]]
name = %q
key = "node.key"
`, h.env.Repo, h.env.Root, filepath.Join(h.env.Dir, "state"), h.etc, h.node)), 0o644))
	var err error
	if h.cfg, err = config.Load(cfgPath); err != nil {
		t.Fatal(err)
	}
	h.img, _ = bundlertest.WriteImage(t, filepath.Join(h.env.Dir, "img.tar"), imagetest.File{Path: "app", Mode: 0o755, Data: []byte("app")})
	h.eng.ExecFunc = func(_ context.Context, name string, argv []string) (engine.ExecResult, error) {
		if len(argv) == 2 && argv[0] == "/app" && argv[1] == "fail" {
			if h.onUnhealthy != nil {
				h.onUnhealthy()
				h.onUnhealthy = nil
			}
			return engine.ExecResult{ExitCode: 1, Output: []byte("down")}, nil
		}
		return engine.ExecResult{Output: []byte("pong")}, nil
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", h.log.String())
		}
	})
	return h
}

func (h *fsHost) target() string { return filepath.Join(h.etc, "app", "app.conf") }

// fleetFile writes the fleet for conf with a healthy or failing check.
func (h *fsHost) fleetFile(conf string, healthy bool) string {
	health := `["/app", "ok"]`
	if !healthy {
		health = `["/app", "fail"]`
	}
	return bundlertest.WriteFleet(h.t, filepath.Join(h.env.Dir, "fleet"), bundlertest.Fleet{
		Image: "pullship-test/app:1", Template: conf, Target: h.target(),
		Nodes:     []bundlertest.Node{{Name: h.node, Region: "test", Address: "10.0.0.1/24"}},
		StatusKey: h.key.PubPEM,
		Extra:     "health = { command = " + health + ", expect = \"pong\", timeout = \"5s\", retries = 0 }\n",
	})
}

func (h *fsHost) release(conf string, healthy bool) {
	h.env.Cut(h.t, h.fleetFile(conf, healthy), h.img)
}

func (h *fsHost) once() (agent.Outcome, error) {
	a := openAgent(h.t, h.cfg, agent.Options{Engine: h.eng, Logger: slog.New(slog.NewTextHandler(&h.log, nil))})
	defer a.Close()
	return a.Once(context.Background())
}

// crashedOnce is once stopped dead right after the journal records step.
func (h *fsHost) crashedOnce(step state.Step) bool {
	crashes.Store(h.cfg.StateDir, step)
	defer crashes.Delete(h.cfg.StateDir)
	a := openAgent(h.t, h.cfg, agent.Options{Engine: h.eng, Logger: slog.New(slog.NewTextHandler(&h.log, nil))})
	defer a.Close()
	done, ended := make(chan struct{}), false
	go func() {
		defer close(done)
		a.Once(context.Background())
		ended = true
	}()
	<-done
	return !ended
}

// reportedSHA256 is the digest the node's newest status report gives for
// its file, read from the status branch as pullship status reads it.
func (h *fsHost) reportedSHA256() string {
	h.t.Helper()
	r, err := bundler.Open(context.Background(), h.env.Repo, filepath.Join(h.env.Dir, "status-cache", randHex(4)), repo.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	f, err := r.FleetStatus(context.Background(), h.env.Pinned, time.Now(), bundler.FleetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, n := range f.Nodes {
		if n.Node == h.node && n.Status != nil {
			for _, sf := range n.Status.Files {
				if sf.Target == h.target() {
					return sf.SHA256
				}
			}
		}
	}
	h.t.Fatalf("no status report with %s", h.target())
	return ""
}

// outsideUntouched fails unless the outside directory holds exactly want.
func (h *fsHost) outsideHolds(want map[string]string) {
	h.t.Helper()
	got := map[string]string{}
	filepath.WalkDir(h.outside, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(h.outside, p)
			got[rel] = string(b)
		}
		return nil
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		h.t.Fatalf("outside allowed_dirs: %v, want %v", got, want)
	}
}

func sha(s string) string {
	b := sha256.Sum256([]byte(s))
	return hex.EncodeToString(b[:])
}

// TestRollbackThroughPlantedLink: a release fails its health check after
// its container swapped a directory (or the file) on the way to its node
// file for a link out of allowed_dirs. The rollback writes nothing through
// it (before the fix it wrote the old file's bytes, as root, outside
// allowed_dirs), still restores the previous container and says which file
// it did not restore; the next release applies normally once the path is
// sane again.
func TestRollbackThroughPlantedLink(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(h *fsHost)
	}{
		{"parent dir swapped for a link", func(h *fsHost) {
			must(t, os.Rename(filepath.Join(h.etc, "app"), filepath.Join(h.etc, "app.old")))
			must(t, os.Symlink(h.outside, filepath.Join(h.etc, "app")))
		}},
		{"parent dir swapped for a relative link", func(h *fsHost) {
			must(t, os.Rename(filepath.Join(h.etc, "app"), filepath.Join(h.etc, "app.old")))
			must(t, os.Symlink("../outside", filepath.Join(h.etc, "app")))
		}},
		{"parent dir swapped for a dangling link", func(h *fsHost) {
			must(t, os.Rename(filepath.Join(h.etc, "app"), filepath.Join(h.etc, "app.old")))
			must(t, os.Symlink(filepath.Join(h.outside, "nowhere"), filepath.Join(h.etc, "app")))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newFSHost(t)
			h.release("v1\n", true)
			if out, err := h.once(); err != nil || out != agent.Converged {
				t.Fatalf("release 1: %v %v", out, err)
			}
			h.release("v2\n", false)
			h.onUnhealthy = func() { tc.plant(h) }
			out, err := h.once()
			if out != agent.Failed || !errors.Is(err, agent.ErrRolledBack) {
				t.Fatalf("unhealthy release: %v %v", out, err)
			}
			if !strings.Contains(err.Error(), "symbolic link") {
				t.Errorf("the error does not say a file was not restored: %v", err)
			}
			h.outsideHolds(map[string]string{})
			if _, err := os.Lstat(filepath.Join(h.outside, "nowhere")); err == nil {
				t.Fatal("the rollback created the dangling link's target")
			}
			// The container came back; nothing of the rollback is left.
			if cs, found, _ := h.eng.Inspect(context.Background(), "pullship-test-"+h.node); !found || !cs.Running {
				t.Fatalf("container after rollback: %+v found=%v", cs, found)
			}
			if ents, _ := os.ReadDir(filepath.Join(h.cfg.StateDir, "backup")); len(ents) != 0 {
				t.Fatalf("backups left after the rollback: %v", ents)
			}
			// The operator (or the container) puts the directory back: the
			// next release applies.
			must(t, os.Remove(filepath.Join(h.etc, "app")))
			must(t, os.Rename(filepath.Join(h.etc, "app.old"), filepath.Join(h.etc, "app")))
			h.release("v3\n", true)
			if out, err := h.once(); err != nil || out != agent.Converged {
				t.Fatalf("release 3: %v %v", out, err)
			}
			if b, _ := os.ReadFile(h.target()); string(b) != "v3\n" {
				t.Fatalf("node file %q", b)
			}
		})
	}
}

// TestRollbackReplacesPlantedFile: a link, FIFO or hard link put in the
// node file's place is replaced by the restored file, never written
// through.
func TestRollbackReplacesPlantedFile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(h *fsHost)
	}{
		{"file swapped for a link", func(h *fsHost) {
			must(t, os.Remove(h.target()))
			must(t, os.Symlink(filepath.Join(h.outside, "host.conf"), h.target()))
		}},
		{"file swapped for a hard link", func(h *fsHost) {
			must(t, os.Remove(h.target()))
			must(t, os.Link(filepath.Join(h.outside, "host.conf"), h.target()))
		}},
		{"file swapped for a FIFO", func(h *fsHost) {
			must(t, os.Remove(h.target()))
			must(t, syscall.Mkfifo(h.target(), 0o644))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newFSHost(t)
			must(t, os.WriteFile(filepath.Join(h.outside, "host.conf"), []byte("host\n"), 0o600))
			h.release("v1\n", true)
			if out, err := h.once(); err != nil || out != agent.Converged {
				t.Fatalf("release 1: %v %v", out, err)
			}
			h.release("v2\n", false)
			h.onUnhealthy = func() { tc.plant(h) }
			if out, err := h.once(); out != agent.Failed || !errors.Is(err, agent.ErrRolledBack) {
				t.Fatalf("unhealthy release: %v %v", out, err)
			}
			h.outsideHolds(map[string]string{"host.conf": "host\n"})
			fi, err := os.Lstat(h.target())
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("node file after rollback: %v %v", fi, err)
			}
			if b, _ := os.ReadFile(h.target()); string(b) != "v1\n" {
				t.Fatalf("node file after rollback %q, want v1", b)
			}
		})
	}
}

// TestPlantedFileRefused: a node file that is a link (to a file, through a
// directory), a hard link, a FIFO or a device before an apply is neither
// backed up (read), hashed into the status report, nor written through;
// the release is refused for the node and the outside file keeps its
// bytes. Before the fix the status report published the digest of the file
// the link named, and a FIFO hung the pass.
func TestPlantedFileRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(h *fsHost)
		root  bool
	}{
		{"link to a host file", func(h *fsHost) {
			must(t, os.Remove(h.target()))
			must(t, os.Symlink(filepath.Join(h.outside, "host.conf"), h.target()))
		}, false},
		{"dir link to a host dir", func(h *fsHost) {
			must(t, os.Remove(h.target()))
			must(t, os.Remove(filepath.Join(h.etc, "app")))
			must(t, os.Symlink(h.outside, filepath.Join(h.etc, "app")))
			must(t, os.Rename(filepath.Join(h.outside, "host.conf"), filepath.Join(h.outside, "app.conf")))
		}, false},
		{"hard link to a host file", func(h *fsHost) {
			must(t, os.Remove(h.target()))
			must(t, os.Link(filepath.Join(h.outside, "host.conf"), h.target()))
		}, false},
		{"FIFO", func(h *fsHost) {
			must(t, os.Remove(h.target()))
			must(t, syscall.Mkfifo(h.target(), 0o644))
		}, false},
		{"device", func(h *fsHost) {
			must(t, os.Remove(h.target()))
			must(t, syscall.Mknod(h.target(), syscall.S_IFCHR|0o644, 1<<8|3)) // /dev/null
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.root && os.Geteuid() != 0 {
				t.Skip("making a device needs root")
			}
			h := newFSHost(t)
			must(t, os.WriteFile(filepath.Join(h.outside, "host.conf"), []byte("host secret\n"), 0o600))
			h.release("v1\n", true)
			if out, err := h.once(); err != nil || out != agent.Converged {
				t.Fatalf("release 1: %v %v", out, err)
			}
			tc.plant(h)
			before := map[string]string{}
			filepath.WalkDir(h.outside, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					b, _ := os.ReadFile(p)
					rel, _ := filepath.Rel(h.outside, p)
					before[rel] = string(b)
				}
				return nil
			})
			done := make(chan struct{})
			var out agent.Outcome
			var err error
			go func() {
				defer close(done)
				h.release("v2\n", true)
				out, err = h.once()
			}()
			select {
			case <-done:
			case <-time.After(time.Minute):
				t.Fatal("the pass hangs on the planted file")
			}
			if err == nil || out == agent.Converged {
				t.Fatalf("release over a planted file: %v %v", out, err)
			}
			h.outsideHolds(before)
			if got := h.reportedSHA256(); got == sha("host secret\n") {
				t.Fatal("the status report publishes the digest of a host file outside allowed_dirs")
			}
		})
	}
}

// TestNoSecretsLeftInBackups: the previous plaintext of an encrypted node
// file, kept in state/backup while a release is applied, is gone after a
// rollback, after a refused apply and after a crash recovered at the next
// start, as after a healthy apply.
func TestNoSecretsLeftInBackups(t *testing.T) {
	h := newFSHost(t)
	ctx := context.Background()
	ops := filepath.Join(h.env.Dir, "ops.age")
	opsRcpt, err := secrets.GenerateIdentity(ops)
	must(t, err)
	nodeRcpt, err := secrets.GenerateIdentity(filepath.Join(h.env.Dir, "node.age"))
	must(t, err)
	cut := func(value string, healthy bool) {
		fleet := h.fleetFile("cookie = {{secret \"cookie\"}}\n", healthy)
		data, err := os.ReadFile(fleet)
		must(t, err)
		src := strings.Replace(string(data), "[[node]]\n", "[secrets]\nrecipients = [\""+opsRcpt+"\"]\n\n[[node]]\nage_recipient = \""+nodeRcpt+"\"\n", 1)
		must(t, os.WriteFile(fleet, []byte(src), 0o644))
		must(t, bundler.SetSecret(fleet, h.node, "cookie", []byte(value)))
		if _, err := h.env.Release.Release(ctx, bundler.ReleaseOptions{Fleet: fleet, Image: image.TarFile(h.img),
			Signers: []signature.Signer{h.env.Key.Signer}, SecretsIdentity: ops}); err != nil {
			t.Fatal(err)
		}
	}
	backups := filepath.Join(h.cfg.StateDir, "backup")
	noSecrets := func(when string) {
		t.Helper()
		filepath.WalkDir(backups, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := os.ReadFile(p)
				if bytes.Contains(b, []byte("s3cr3t")) {
					t.Fatalf("%s: %s holds a decrypted secret", when, p)
				}
			}
			return nil
		})
	}

	cut("s3cr3t-one", true)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 1: %v %v", out, err)
	}
	noSecrets("after a healthy apply")

	cut("s3cr3t-two", false)
	if out, err := h.once(); out != agent.Failed || !errors.Is(err, agent.ErrRolledBack) {
		t.Fatalf("unhealthy release: %v %v", out, err)
	}
	if b, _ := os.ReadFile(h.target()); string(b) != "cookie = s3cr3t-one\n" {
		t.Fatalf("node file after rollback %q", b)
	}
	noSecrets("after a rollback")

	// A crash after the backups were taken (left as a crash leaves them:
	// journal at the files step): the next start rolls back and removes
	// them.
	cut("s3cr3t-three", true)
	h.eng.Fail = func(method, object string) error {
		if method == "Restart" {
			return errors.New("engine gone")
		}
		return nil
	}
	h.onUnhealthy = nil
	if _, err := h.once(); err == nil {
		t.Fatal("apply with a failing engine succeeded")
	}
	noSecrets("after a failed apply")
	h.eng.Fail = nil
	must(t, os.MkdirAll(filepath.Join(backups, h.node), 0o700))
	must(t, os.WriteFile(filepath.Join(backups, h.node, "0"), []byte("cookie = s3cr3t-one\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(h.cfg.StateDir, "journal-"+h.node+".toml"), []byte(fmt.Sprintf(
		"node = %q\nversion = 3\nstep = \"files\"\n\n[[file]]\ntarget = %q\nbackup = %q\nexisted = true\nmode = 420\n",
		h.node, h.target(), filepath.Join(backups, h.node, "0"))), 0o600))
	if out, err := h.once(); err != nil {
		t.Fatalf("pass after the crash: %v %v", out, err)
	}
	noSecrets("after crash recovery")
}

// TestCrashDuringContainerRollback: a pass that dies once the files are
// restored is finished by the next start, which restores the container
// without restoring the files again, removes the backups (the secrets they
// may hold) and rolls the failing release back again.
func TestCrashDuringContainerRollback(t *testing.T) {
	h := newFSHost(t)
	h.release("v1\n", true)
	if out, err := h.once(); err != nil || out != agent.Converged {
		t.Fatalf("release 1: %v %v", out, err)
	}
	h.release("v2\n", false)
	if !h.crashedOnce(state.StepRollbackContainer) {
		t.Fatal("the pass did not reach the container rollback")
	}
	if b, _ := os.ReadFile(h.target()); string(b) != "v1\n" {
		t.Fatalf("node file after the crash %q", b)
	}
	out, err := h.once()
	if out != agent.Failed || !errors.Is(err, agent.ErrRolledBack) {
		t.Fatalf("pass after the crash: %v %v", out, err)
	}
	if cs, found, _ := h.eng.Inspect(context.Background(), "pullship-test-"+h.node); !found || !cs.Running {
		t.Fatalf("container after recovery: %+v found=%v", cs, found)
	}
	if b, _ := os.ReadFile(h.target()); string(b) != "v1\n" {
		t.Fatalf("node file after recovery %q", b)
	}
	if ents, _ := os.ReadDir(filepath.Join(h.cfg.StateDir, "backup")); len(ents) != 0 {
		t.Fatalf("backups left after recovery: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.StateDir, "journal-"+h.node+".toml")); err == nil {
		if j, _ := os.ReadFile(filepath.Join(h.cfg.StateDir, "journal-"+h.node+".toml")); !strings.Contains(string(j), "rolledback") {
			t.Fatalf("journal after recovery:\n%s", j)
		}
	}
}
