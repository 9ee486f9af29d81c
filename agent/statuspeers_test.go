package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/agent/report"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/cli"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
	"github.com/pullship/pullship/schema"
)

// TestStatusPeers: two regions, each with a status repository of its own
// (region a's over git daemon, region b's over git http-backend, and 1,000
// other nodes' branches in a's). Node a1 (wave 1) pushes to a's only; node
// b2 (wave 2) pushes to b's and reads a's as a [[status_peers]] table. A
// report for a1 signed by b2's key, placed in b's repository, is not
// accepted: b2 waits. It converges once a1's own report is in a's
// repository, reading from it only the branch it asks for. `pullship
// status` with both status repositories shows both nodes' signed reports;
// with b's alone, a1's report there is forged.
func TestStatusPeers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := bundlertest.NewEnv(t)
	daemon := gittest.Daemon(t, env.Dir)
	releases := daemon.URL + "/releases.git"
	statusADir := gittest.InitBare(t, env.Dir, "status-a.git")
	addBranches(t, statusADir, 1000)
	statusA := daemon.URL + "/status-a.git"
	// b2 reads region a's repository through a counting proxy.
	peerA, err := gittest.NewCutProxy(statusA, 0)
	must(t, err)
	defer peerA.Close()
	statusBase := t.TempDir()
	gittest.InitBare(t, statusBase, "status-b.git")
	statusB := gittest.HTTP(t, statusBase, nil) + "/status-b.git"

	f := newWaveFleet(t, env, releases, []waveNode{
		{name: "a1", region: "a", wave: 1, tables: fmt.Sprintf("[status_remote]\nurl = %q\n", statusA)},
		{name: "b2", region: "b", wave: 2, tables: fmt.Sprintf("[status_remote]\nurl = %q\n\n[[status_peers]]\nurl = %q\n", statusB, peerA.URL)},
	})
	f.release("v1 {{.Node}}\n", ping)
	once, logs, keys, eng := f.once, f.logs, f.keys, f.eng
	once("b2", agent.Nothing)
	if !strings.Contains(logs["b2"].String(), "node a1 (wave 1) has not reported yet") {
		t.Fatalf("b2's log does not say why it waits:\n%s", logs["b2"])
	}

	// A report for a1, healthy on release 1 and with a higher sequence
	// than any a1 will push, signed by b2's key, in region b's repository.
	store, err := repo.Init(filepath.Join(env.Dir, "forger"))
	must(t, err)
	forger, err := report.New("a1", keys["b2"].Signer, store)
	must(t, err)
	for i := range 5 {
		must(t, forger.Commit(&schema.Status{Node: "a1", Region: "a", Time: time.Now().UTC().Truncate(time.Second).Add(time.Duration(i) * time.Second),
			TargetVersion: 1, AppliedVersion: 1, Container: schema.StatusContainer{State: "running"},
			Network: schema.StatusNetwork{Driver: schema.DriverNone}, Health: schema.StatusHealth{OK: true}}))
	}
	b, err := repo.Open(ctx, statusB, repo.Options{})
	must(t, err)
	must(t, forger.Flush(ctx, b))
	logs["b2"].Reset()
	once("b2", agent.Nothing)
	if !strings.Contains(logs["b2"].String(), "node a1's report is forged") {
		t.Fatalf("b2 does not refuse the forged report of a1:\n%s", logs["b2"])
	}

	once("a1", agent.Converged)
	up, down := peerA.Bytes()
	once("b2", agent.Converged)
	up2, down2 := peerA.Bytes()
	t.Logf("b2's gating pass read region a's status repository (1,001 branches): %d B up, %d B down", up2-up, down2-down)
	// ls-refs for a1's branch only, and a1's report: not the 1,000 other
	// branches' advertisement (about 74 B each).
	if down2-down > 20000 {
		t.Errorf("reading a1's report from region a's status repository moved %d B down: more than the one branch asked for", down2-down)
	}

	status := func(repos ...string) (int, string) {
		var out, errb bytes.Buffer
		args := []string{"status", "--repo", releases, "--root", env.Root, "--cache", filepath.Join(env.Dir, "cli-cache-"+randHex(3))}
		for _, r := range repos {
			args = append(args, "--status-repo", r)
		}
		code := cli.Main(cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}, args)
		return code, out.String() + errb.String()
	}
	// Both repositories: a1's own report is shown, and the forged one in
	// region b's repository, outvoted, is still named and refused (exit 3).
	row := func(out, node string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, node+" ") {
				return l
			}
		}
		return ""
	}
	outvoted := "a1 in " + statusB + ": FORGED report"
	code, out := status(statusA, statusB)
	if code != 3 || strings.Contains(out, "MISSING") || !strings.Contains(out, "wave 2 (b2): 1/1  done") || !strings.Contains(out, outvoted) {
		t.Fatalf("pullship status with both status repositories: exit %d, want 3, both nodes' own reports and a1's forged one outvoted\n%s", code, out)
	}
	for _, n := range []string{"a1", "b2"} {
		if r := row(out, n); r == "" || strings.Contains(r, "FORGED") {
			t.Errorf("pullship status: %s's row is %q, want its own report", n, r)
		}
	}
	// Either order: the signed report wins, not the repository named first.
	if code, out2 := status(statusB, statusA); code != 3 || strings.Contains(row(out2, "a1"), "FORGED") || !strings.Contains(out2, outvoted) {
		t.Errorf("pullship status --status-repo B --status-repo A: exit %d\n%s", code, out2)
	}
	// Region a's repository alone: nothing forged is read.
	if code, out3 := status(statusA); code != 0 || strings.Contains(out3, "FORGED") || row(out3, "a1") == "" {
		t.Errorf("pullship status --status-repo A: exit %d\n%s", code, out3)
	}
	// Region b's repository alone holds a1's forged report only.
	if code, out := status(statusB); code != 3 || !strings.Contains(out, "FORGED") {
		t.Errorf("pullship status --status-repo B: exit %d, want 3 and a1's report forged\n%s", code, out)
	}

	// Region a's repository out of reach: an agent of b2 starting afresh
	// does not know a1 healthy, and waits.
	peerA.Close()
	p := filepath.Join(env.Dir, "agent-b2-again.toml")
	must(t, os.WriteFile(p, []byte(fmt.Sprintf("remotes = [%q]\nroot = %q\nstate_dir = %q\nallowed_dirs = [%q]\n\n[status_remote]\nurl = %q\n\n[[status_peers]]\nurl = %q\n\n[[node]]\nname = \"b2\"\nkey = %q\n",
		releases, env.Root, filepath.Join(env.Dir, "state-b2-again"), filepath.Join(env.Dir, "etc"), statusB, peerA.URL, keys["b2"].KeyPath)), 0o644))
	cfg, err := config.Load(p)
	must(t, err)
	var log bytes.Buffer
	again, err := agent.New(cfg, agent.Options{Engine: eng, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	must(t, err)
	defer again.Close()
	if out, err := again.Once(ctx); out != agent.Nothing || err != nil || !strings.Contains(log.String(), "node a1's report is forged") || !strings.Contains(log.String(), "status peer ") {
		t.Fatalf("b2 with region a's status repository unreachable: once = %v, %v\n%s", out, err, log.String())
	}
}
