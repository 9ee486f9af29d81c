package report

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

func needGit(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("git not found")
		}
		t.Skip("git not found")
	}
}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startDaemon runs git daemon serving base on port and returns a function
// stopping it.
func startDaemon(t testing.TB, base string, port int) func() {
	t.Helper()
	cmd := exec.Command("git", "daemon", "--export-all", "--enable=receive-pack", "--reuseaddr",
		"--informative-errors", "--base-path="+base, "--listen=127.0.0.1", "--port="+strconv.Itoa(port), base)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+base)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return stop
		}
		if time.Now().After(deadline) {
			t.Fatalf("git daemon did not listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type env struct {
	base, bare, url string
	store           *repo.Store
	remote          *repo.Remote
	rep             *Reporter
	port            int
}

func newEnv(t *testing.T, node string) *env {
	needGit(t)
	e := &env{base: t.TempDir()}
	e.bare = filepath.Join(e.base, "fleet.git")
	git(t, e.base, "init", "--bare", "-q", e.bare)
	// Something else on the server the agent must never touch.
	git(t, e.base, "--git-dir="+e.bare, "update-ref", "refs/heads/releases", makeOther(t, e.base))
	e.port = freePort(t)
	e.url = "git://127.0.0.1:" + strconv.Itoa(e.port) + "/fleet.git"
	var err error
	e.remote, err = repo.Open(context.Background(), e.url, repo.Options{})
	must(t, err)
	e.store, err = repo.Init(filepath.Join(t.TempDir(), "objects"))
	must(t, err)
	kp, err := schema.GenerateKey(schema.AlgECDSAP256SHA256, nil)
	must(t, err)
	signer, _, err := schema.LoadPrivateKey("node.key", kp.PrivatePEM, nil)
	must(t, err)
	e.rep, err = New(node, signer, e.store)
	must(t, err)
	return e
}

// makeOther commits a file in a scratch repository of the server's and
// returns the commit, for the server's releases branch.
func makeOther(t *testing.T, base string) string {
	w := filepath.Join(base, "work")
	git(t, base, "init", "-q", w)
	must(t, os.WriteFile(filepath.Join(w, "release.toml"), []byte("x\n"), 0o644))
	git(t, w, "add", ".")
	git(t, w, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "release")
	git(t, w, "push", "-q", filepath.Join(base, "fleet.git"), "HEAD:refs/heads/other")
	return strings.TrimSpace(git(t, w, "rev-parse", "HEAD"))
}

var t0 = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

func status(node string, applied int64, at time.Time) *schema.Status {
	checked := at
	return &schema.Status{Node: node, Region: "eu", Time: at, TargetVersion: applied, AppliedVersion: applied,
		Container: schema.StatusContainer{State: "running"},
		Network:   schema.StatusNetwork{Driver: schema.DriverNone},
		Health:    schema.StatusHealth{OK: true, Output: "pong\n", CheckedAt: &checked}}
}

// serverLog is the sequence numbers on the server's status branch, newest first.
func serverLog(t *testing.T, e *env, node string) []int64 {
	out := git(t, e.bare, "log", "--format=%H", "status/"+node)
	var seqs []int64
	for _, h := range strings.Fields(out) {
		data := git(t, e.bare, "show", h+":status.toml")
		st, err := schema.ParseStatus("status.toml", []byte(data))
		must(t, err)
		seqs = append(seqs, st.Sequence)
	}
	return seqs
}

func serverRefs(t *testing.T, e *env) []string {
	return strings.Fields(git(t, e.bare, "for-each-ref", "--format=%(refname)"))
}

func TestQueueWhileOfflineThenFlushInOrder(t *testing.T) {
	e := newEnv(t, "eu")
	ctx := context.Background()
	before := serverRefs(t, e)

	// Remote down: every report is queued locally.
	for v := int64(1); v <= 4; v++ {
		must(t, e.rep.Commit(status("eu", v, t0.Add(time.Duration(v)*time.Minute))))
		if err := e.rep.Flush(ctx, e.remote); err == nil {
			t.Fatal("Flush with the remote down succeeded")
		}
	}
	head, err := e.rep.Head()
	must(t, err)
	local, err := e.store.Log(head, 0)
	must(t, err)
	if len(local) != 4 {
		t.Fatalf("%d commits queued, want 4", len(local))
	}

	// The remote is back: one flush delivers all, in order.
	startDaemon(t, e.base, e.port)
	must(t, e.rep.Flush(ctx, e.remote))
	if got := serverLog(t, e, "eu"); len(got) != 4 || got[0] != 4 || got[3] != 1 {
		t.Fatalf("server log sequences %v, want [4 3 2 1]", got)
	}
	for i, h := range strings.Fields(git(t, e.bare, "log", "--format=%H", "status/eu")) {
		data := git(t, e.bare, "show", h+":status.toml")
		if !strings.Contains(data, "applied_version = "+strconv.Itoa(4-i)) {
			t.Fatalf("commit %d: %s", i, data)
		}
		git(t, e.bare, "cat-file", "-e", h+":status.toml.sig")
	}
	// Only the node's own branch was added.
	after := serverRefs(t, e)
	if len(after) != len(before)+1 || !strings.Contains(strings.Join(after, " "), "refs/heads/status/eu") {
		t.Fatalf("server refs %v, before %v", after, before)
	}
	git(t, e.bare, "fsck", "--strict", "--no-dangling")

	// Nothing new: a second flush is a no-op.
	must(t, e.rep.Flush(ctx, e.remote))
}

func TestFlushFallsBackToNextRemote(t *testing.T) {
	e := newEnv(t, "eu")
	ctx := context.Background()
	startDaemon(t, e.base, e.port)
	down, err := repo.Open(ctx, "git://127.0.0.1:"+strconv.Itoa(freePort(t))+"/fleet.git", repo.Options{})
	must(t, err)
	must(t, e.rep.Commit(status("eu", 1, t0)))
	must(t, e.rep.Flush(ctx, down, e.remote))
	if got := serverLog(t, e, "eu"); len(got) != 1 {
		t.Fatalf("server log %v", got)
	}
}

func TestHeartbeatsCoalesce(t *testing.T) {
	e := newEnv(t, "eu")
	ctx := context.Background()
	startDaemon(t, e.base, e.port)

	must(t, e.rep.Commit(status("eu", 1, t0)))
	must(t, e.rep.Flush(ctx, e.remote))
	// 50 heartbeats, each pushed: history stays at two commits.
	for i := 1; i <= 50; i++ {
		must(t, e.rep.Commit(status("eu", 1, t0.Add(time.Duration(i)*5*time.Minute))))
		if i%10 == 0 {
			must(t, e.rep.Flush(ctx, e.remote))
		}
	}
	got := serverLog(t, e, "eu")
	if len(got) != 2 || got[0] != 51 || got[1] != 1 {
		t.Fatalf("server log after heartbeats %v, want [51 1]", got)
	}
	// A change is kept, and the heartbeat before it too.
	st := status("eu", 2, t0.Add(300*time.Minute))
	must(t, e.rep.Commit(st))
	if st.Sequence != 52 {
		t.Fatalf("sequence %d, want 52", st.Sequence)
	}
	for i := 1; i <= 5; i++ {
		must(t, e.rep.Commit(status("eu", 2, t0.Add(time.Duration(300+i)*time.Minute))))
	}
	must(t, e.rep.Flush(ctx, e.remote))
	got = serverLog(t, e, "eu")
	if want := []int64{57, 52, 51, 1}; !equal(got, want) {
		t.Fatalf("server log %v, want %v", got, want)
	}
	// A changed health result is not a heartbeat.
	bad := status("eu", 2, t0.Add(400*time.Minute))
	bad.Health.OK = false
	must(t, e.rep.Commit(bad))
	must(t, e.rep.Commit(status("eu", 2, t0.Add(401*time.Minute))))
	must(t, e.rep.Flush(ctx, e.remote))
	if got := serverLog(t, e, "eu"); len(got) != 6 {
		t.Fatalf("server log %v, want 6 commits", got)
	}
	git(t, e.bare, "fsck", "--strict")
}

func TestCommitChecks(t *testing.T) {
	e := newEnv(t, "eu")
	if err := e.rep.Commit(status("us", 1, t0)); err == nil {
		t.Fatal("report for another node committed")
	}
	bad := status("eu", 1, t0)
	bad.Container.State = "sleeping"
	if err := e.rep.Commit(bad); err == nil {
		t.Fatal("invalid report committed")
	}
	if h, err := e.rep.Head(); err != nil || !h.IsZero() {
		t.Fatalf("head after failed commits: %v %v", h, err)
	}
	if _, err := New("../x", nil, e.store); err == nil {
		t.Fatal("bad node name accepted")
	}
}

// A remote whose branch moved (another writer) is overwritten only through
// CAS on the advertised value; a pusher that keeps racing gives up.
type racingPusher struct {
	Pusher
	pushes int
}

func (p *racingPusher) Push(ctx context.Context, u []repo.RefUpdate, st *repo.ObjectStream) (*repo.PushResult, error) {
	p.pushes++
	if len(u) != 1 || u[0].Name != "refs/heads/status/eu" {
		return nil, errors.New("pushed another ref")
	}
	return nil, &repo.RefConflictError{Ref: u[0].Name, Expected: u[0].Old, Actual: plumbing.NewHash("1111111111111111111111111111111111111111")}
}

func TestFlushGivesUpOnRace(t *testing.T) {
	e := newEnv(t, "eu")
	startDaemon(t, e.base, e.port)
	must(t, e.rep.Commit(status("eu", 1, t0)))
	p := &racingPusher{Pusher: e.remote}
	err := e.rep.Flush(context.Background(), p)
	var ce *repo.RefConflictError
	if !errors.As(err, &ce) || p.pushes != pushAttempts {
		t.Fatalf("Flush: %v after %d pushes", err, p.pushes)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestIsHeartbeat(t *testing.T) {
	a := status("eu", 1, t0)
	b := status("eu", 1, t0.Add(time.Hour))
	b.Sequence = 9
	if !IsHeartbeat(a, b) {
		t.Fatal("time-only change is not a heartbeat")
	}
	b.Cluster.Members = []schema.StatusMember{{Node: "x", Running: true}}
	if IsHeartbeat(a, b) {
		t.Fatal("cluster change is a heartbeat")
	}

	// A node of services: each service's check time is a heartbeat's too,
	// its state is not.
	sv := func(at time.Time, state string) []schema.StatusService {
		return []schema.StatusService{{Name: "hook", Container: schema.StatusContainer{State: state},
			Health: schema.StatusHealth{OK: true, CheckedAt: &at}}}
	}
	a, b = status("eu", 1, t0), status("eu", 1, t0.Add(time.Hour))
	a.Services, b.Services = sv(t0, "running"), sv(t0.Add(time.Hour), "running")
	if !IsHeartbeat(a, b) {
		t.Fatal("services' check times alone make no report")
	}
	if a.Services[0].Health.CheckedAt.Equal(*b.Services[0].Health.CheckedAt) {
		t.Fatal("IsHeartbeat changed its arguments")
	}
	b.Services = sv(t0, "exited")
	if IsHeartbeat(a, b) {
		t.Fatal("a service's container state change is a heartbeat")
	}
}
