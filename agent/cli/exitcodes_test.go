package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/engine/enginetest"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// fixture is one release served by git daemon, and an agent.toml for a
// host of one node that reads it through remote (the daemon's URL, or a
// proxy in front of it).
type fixture struct {
	t    *testing.T
	env  *bundlertest.Env
	git  string // git://…/releases.git
	dir  string
	fake *enginetest.Fake
}

func newFixture(t *testing.T) *fixture {
	e := bundlertest.NewEnv(t)
	fleet := bundlertest.WriteFleet(t, filepath.Join(e.Dir, "fleet"), bundlertest.Fleet{
		Image: "pullship-test/app:1", Template: "greeting = hello\n", Target: filepath.Join(e.Dir, "etc", "app.conf"),
		Nodes: []bundlertest.Node{{Name: "cn", Region: "cn", Address: "10.0.0.1/24"}}})
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"), imagetest.File{Path: "app", Data: []byte("hello")})
	e.Cut(t, fleet, img)
	srv := gittest.Daemon(t, e.Dir)
	return &fixture{t: t, env: e, git: srv.URL + "/releases.git", dir: e.Dir, fake: enginetest.NewFake()}
}

// config writes an agent.toml reading remote and pinning root, creates the
// node's key, and returns its path.
func (f *fixture) config(name, remote, root, extra string) string {
	p := filepath.Join(f.dir, name+".toml")
	conf := fmt.Sprintf("remotes = [%q]\nroot = %q\nstate_dir = %q\nallowed_dirs = [%q]\n%s\n[[node]]\nname = \"cn\"\nkey = \"node.key\"\n",
		remote, root, filepath.Join(f.dir, "state-"+name), filepath.Join(f.dir, "etc"), extra)
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if code, _, stderr := f.run(context.Background(), "init", "--config", p); code != 0 {
		f.t.Fatalf("init: %d %s", code, stderr)
	}
	return p
}

// run runs pullship-agent in-process against the fixture's fake engine.
func (f *fixture) run(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	a := &app{env: env, engine: func(context.Context, *config.Config, string) (engine.Engine, func(), error) {
		return f.fake, func() {}, nil
	}}
	code := exitCodes.Exit(env, "pullship-agent", a.main(ctx, args))
	return code, out.String(), errb.String()
}

// TestOncePlanExitCodes: once and plan exit by the table: refused 3 (a
// root that did not sign), network 1 (a connection cut mid-fetch, the
// remote named), usage 2, and once's 0 converged and 10 nothing to do.
func TestOncePlanExitCodes(t *testing.T) {
	f := newFixture(t)
	stranger := bundlertest.NewKey(t, f.dir, "stranger")
	if err := os.Mkdir(filepath.Join(f.dir, "stranger"), 0o755); err != nil {
		t.Fatal(err)
	}
	strangerRoot := bundlertest.WriteRoot(t, filepath.Join(f.dir, "stranger"), 1, 1, []*bundlertest.Key{stranger}, stranger)
	history, err := gittest.NewCutProxy(f.git, 1) // cuts the release history's fetch
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(history.Close)
	image, err := gittest.NewCutProxy(f.git, 2) // lets the history through, cuts the image's
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(image.Close)

	ctx := context.Background()
	for _, c := range []struct {
		name, remote, root string
		args               []string
		code               int
		stderr             string
	}{
		{"refused", f.git, strangerRoot, []string{"once"}, ExitRefused, "required signatures valid"},
		{"refused", f.git, strangerRoot, []string{"plan"}, ExitRefused, "required signatures valid"},
		{"cut", history.URL, f.env.Root, []string{"once"}, ExitFailure, "git://127.0.0.1:[0-9]+/releases.git: .*connection cut before the end of the pack"},
		{"cut", history.URL, f.env.Root, []string{"plan"}, ExitFailure, "git://127.0.0.1:[0-9]+/releases.git: .*connection cut before the end of the pack"},
		{"cutimage", image.URL, f.env.Root, []string{"once"}, ExitFailure, "connection cut before the end of the pack"},
		{"usage", f.git, f.env.Root, []string{"once", "--bogus"}, ExitUsage, "flag provided but not defined"},
		{"usage", f.git, f.env.Root, []string{"plan", "extra"}, ExitUsage, "unexpected argument"},
	} {
		cfg := f.config(c.name+"-"+c.args[0], c.remote, c.root, "")
		code, _, stderr := f.run(ctx, append(c.args, "--config", cfg)...)
		if code != c.code || !matches(stderr, c.stderr) {
			t.Errorf("%s %v: exit %d, want %d; stderr:\n%s", c.name, c.args, code, c.code, stderr)
		}
	}
	if code, _, stderr := f.run(ctx, "once", "--config", filepath.Join(f.dir, "none.toml")); code != ExitUsage {
		t.Errorf("missing agent.toml: exit %d\n%s", code, stderr)
	}

	cfg := f.config("ok", f.git, f.env.Root, "")
	if code, out, stderr := f.run(ctx, "plan", "--config", cfg); code != ExitOK {
		t.Errorf("plan: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, out, stderr := f.run(ctx, "once", "--config", cfg); code != ExitOK || !strings.Contains(out, "converged") {
		t.Errorf("once: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, out, stderr := f.run(ctx, "once", "--config", cfg); code != ExitNothingToDo || strings.Contains(stderr, "pullship-agent: nothing") {
		t.Errorf("second once: exit %d\n%s\n%s", code, out, stderr)
	}
}

// TestOnceStalledRemote: a server that accepts the connection and then
// sends nothing (git://; HTTP after the response headers) makes once exit
// 1 within stall_timeout, naming the remote without its credentials; with
// a working remote after it, the pass converges from that one.
func TestOnceStalledRemote(t *testing.T) {
	f := newFixture(t)
	silent := gittest.Silent(t)
	headers := gittest.SilentHTTP(t)
	secretURL := strings.Replace(headers, "http://", "http://pullship:s3cret-token@", 1) + "/releases.git"
	for _, c := range []struct{ name, remote, want string }{
		{"git", "git://" + silent + "/releases.git", "git://" + silent + "/releases.git"},
		{"http", secretURL, headers + "/releases.git"},
	} {
		cfg := f.config("stall-"+c.name, c.remote, f.env.Root, `stall_timeout = "300ms"`)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		code, _, stderr := f.run(ctx, "once", "--config", cfg)
		cancel()
		if code != ExitFailure || !strings.Contains(stderr, c.want) || !strings.Contains(stderr, "server stalled") || strings.Contains(stderr, "s3cret") {
			t.Errorf("%s: exit %d, want %d naming %s and the stall; stderr:\n%s", c.name, code, ExitFailure, c.want, stderr)
		}
	}

	// The silent remote first, a working one second: the pass converges.
	cfg := f.config("stall-next", "git://"+silent+"/releases.git", f.env.Root, `stall_timeout = "300ms"`)
	conf, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf = bytes.Replace(conf, []byte(fmt.Sprintf("remotes = [%q]", "git://"+silent+"/releases.git")),
		[]byte(fmt.Sprintf("remotes = [%q, %q]", "git://"+silent+"/releases.git", f.git)), 1)
	if err := os.WriteFile(cfg, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := f.run(context.Background(), "once", "--config", cfg); code != ExitOK || !strings.Contains(out, "converged") {
		t.Errorf("silent remote, then a working one: exit %d\n%s\n%s", code, out, stderr)
	}
}

func matches(s, pattern string) bool {
	ok, _ := regexp.MatchString(pattern, s)
	return ok
}

// TestRunMetricsAddrInUse: run fails at start, with an error naming
// metrics_addr, when the address is taken (it used to exit 0 after a pass,
// silently).
func TestRunMetricsAddrInUse(t *testing.T) {
	f := newFixture(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := f.config("metrics", f.git, f.env.Root, fmt.Sprintf("metrics_addr = %q", l.Addr().String()))
	var wg sync.WaitGroup
	wg.Add(1)
	var code int
	var stderr string
	go func() { defer wg.Done(); code, _, stderr = f.run(context.Background(), "run", "--config", cfg) }()
	wg.Wait()
	if code != ExitFailure || !strings.Contains(stderr, "metrics_addr "+l.Addr().String()) || !strings.Contains(stderr, "address already in use") {
		t.Fatalf("run with metrics_addr taken: exit %d\n%s", code, stderr)
	}
	if f.fake.Names() != nil {
		t.Fatalf("run applied a release before failing: containers %v", f.fake.Names())
	}
}

// TestRunStopDuringImageLoad: SIGTERM while run loads an image ends the
// pass cleanly (image loaded, release applied, exit 0, no second pass)
// well within the TimeoutStopSec of the systemd unit, whose comment says
// so.
func TestRunStopDuringImageLoad(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "..", "examples", "vernemq", "pullship-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)min$`).FindSubmatch(unit)
	if m == nil || !bytes.Contains(unit, []byte("finishes the one under way")) {
		t.Fatalf("the unit's TimeoutStopSec (in minutes) and its comment on SIGTERM are not what run does:\n%s", unit)
	}
	mins, _ := strconv.Atoi(string(m[1]))
	timeout := time.Duration(mins) * time.Minute

	f := newFixture(t)
	cfg := f.config("stop", f.git, f.env.Root, `poll_interval = "1h"`)
	started, sent := make(chan struct{}), make(chan struct{})
	var loads atomic.Int32
	f.fake.Fail = func(method, object string) error {
		if method == "LoadImage" && loads.Add(1) == 1 {
			close(started)
			<-sent // the load goes on once the signal is in
		}
		return nil
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	defer signal.Stop(term)

	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errOut := f.run(context.Background(), "run", "--config", cfg)
		done <- result{code, out, errOut}
	}()
	select {
	case <-started:
	case r := <-done:
		t.Fatalf("run ended before loading the image: %d\n%s", r.code, r.stderr)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-term
	stopped := time.Now()
	close(sent)
	var r result
	select {
	case r = <-done:
	case <-time.After(timeout):
		t.Fatalf("run did not stop within the unit's TimeoutStopSec (%s)", timeout)
	}
	if r.code != ExitOK || !strings.Contains(r.stderr, "release applied") {
		t.Fatalf("run after SIGTERM: exit %d\n%s", r.code, r.stderr)
	}
	if loads.Load() != 1 || len(f.fake.Names()) != 1 {
		t.Fatalf("after the stop: %d loads, containers %v", loads.Load(), f.fake.Names())
	}
	t.Logf("stopped %s after SIGTERM (unit allows %s)", time.Since(stopped).Round(time.Millisecond), timeout)
}

// TestHelp: the help of pullship-agent and of each command, with its
// examples and the exit-code table, and usage errors exiting 2.
func TestHelp(t *testing.T) {
	f := &fixture{t: t, fake: enginetest.NewFake()}
	for _, args := range [][]string{nil, {"--help"}, {"help"}} {
		code, out, _ := f.run(context.Background(), args...)
		if code != ExitOK || !strings.Contains(out, "Exit codes:\n  0   success") || !strings.Contains(out, "10  once: nothing to do") {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
	for _, c := range []string{"init", "run", "once", "plan", "status"} {
		for _, args := range [][]string{{c, "--help"}, {c, "-h"}, {"help", c}} {
			code, out, _ := f.run(context.Background(), args...)
			if code != ExitOK || !strings.Contains(out, "Examples:\n  pullship-agent "+c) || !strings.Contains(out, "-c, --config") {
				t.Errorf("%v: exit %d\n%s", args, code, out)
			}
		}
	}
	for _, args := range [][]string{{"nope"}, {"help", "nope"}, {"once", "--config"}, {"status", "-x"}} {
		if code, _, stderr := f.run(context.Background(), args...); code != ExitUsage || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}
