package agent_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/agent/config"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/cli"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// TestStatusRemote: two nodes in two waves whose agents poll the release
// repository over git daemon and push their status to a repository of its
// own over git http-backend ([status_remote]). The wave 2 node waits until
// it reads, from the status repository, the wave 1 node's signed report
// that it is healthy on the release; `pullship status --status-repo` shows
// both reports; the release repository gets no status branch.
func TestStatusRemote(t *testing.T) {
	t.Parallel()
	env := bundlertest.NewEnv(t)
	releases := gittest.Daemon(t, env.Dir).URL + "/releases.git"
	statusBase := t.TempDir()
	statusDir := gittest.InitBare(t, statusBase, "status.git")
	status := gittest.HTTP(t, statusBase, nil) + "/status.git"

	table := fmt.Sprintf("[status_remote]\nurl = %q\n", status)
	f := newWaveFleet(t, env, releases, []waveNode{{name: "cn", wave: 1, tables: table}, {name: "sg", wave: 2, tables: table}})
	f.release("v1 {{.Node}}\n", ping)
	once, logs := f.once, f.logs
	once("sg", agent.Nothing)
	if !strings.Contains(logs["sg"].String(), "node cn (wave 1) has not reported yet") {
		t.Fatalf("sg's log does not say why it waits:\n%s", logs["sg"])
	}
	once("cn", agent.Converged)
	once("sg", agent.Converged)

	branches := func(dir string) string {
		out, err := exec.Command("git", "-C", dir, "for-each-ref", "--format=%(refname)", "refs/heads/status/").CombinedOutput()
		if err != nil {
			t.Fatalf("git for-each-ref in %s: %v\n%s", dir, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := branches(env.Repo); got != "" {
		t.Errorf("the release repository has status branches:\n%s", got)
	}
	if got, want := branches(statusDir), "refs/heads/status/cn\nrefs/heads/status/sg"; got != want {
		t.Errorf("status repository branches:\n%s\nwant:\n%s", got, want)
	}

	var out, errb bytes.Buffer
	code := cli.Main(cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }},
		[]string{"status", "--repo", releases, "--status-repo", status, "--root", env.Root, "--cache", filepath.Join(env.Dir, "cli-cache")})
	t.Logf("pullship status --status-repo:\n%s", out.String())
	if code != 0 || strings.Contains(out.String(), "MISSING") || !strings.Contains(out.String(), "wave 2 (sg): 1/1  done") {
		t.Fatalf("pullship status --status-repo: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	for _, n := range []string{"cn", "sg"} {
		if !strings.Contains(out.String(), "\n"+n+" ") {
			t.Errorf("pullship status --status-repo shows no row for %s", n)
		}
	}
	// The release repository alone has no report to show.
	out.Reset()
	errb.Reset()
	code = cli.Main(cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }},
		[]string{"status", "--repo", releases, "--root", env.Root, "--cache", filepath.Join(env.Dir, "cli-cache-2")})
	if code != 0 || strings.Count(out.String(), "MISSING") != 2 {
		t.Fatalf("pullship status without --status-repo: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
}

// addBranches creates n status branches of other nodes
// (refs/heads/status/other-NNNNN) in the bare repository dir, on a commit
// of their own, and packs the refs as a server's would be.
func addBranches(t *testing.T, dir string, n int) {
	t.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("refs/heads/status/other-%05d", i)
	}
	gittest.Refs(t, dir, "another node's report", names)
}

// TestStatusRemotePushBytes measures what an agent's heartbeat pass costs
// on the wire when the release repository holds 10,000 status branches
// (other fleets', or this one's from before): its status pushed there,
// and pushed instead to a status repository of its own holding 1,000 or
// 100 branches (the fleet's own, a region's; the last with the other 900
// nodes' branches in a status peer, another region's status repository,
// which a heartbeat pass does not touch). Receive-pack advertises
// every ref of the repository pushed to, so the push costs what that
// repository holds; the poll of the release repository stays flat
// (docs/operations.md, "What a poll and a status push cost on the wire").
func TestStatusRemotePushBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 branches: not in -short")
	}
	for _, tc := range []struct {
		name   string
		status int // branches in the status repository; -1: none (status goes to the release repository)
		peer   int // branches in a status peer (another region's status repository); 0: no peer
	}{{"release-repository", -1, 0}, {"status-repository-1000", 1000, 0}, {"status-repository-100", 100, 0}, {"region-100-peer-900", 100, 900}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			h.release(h.image("a"), "version = 1\n", ping)
			addBranches(t, h.env.Repo, 10000)
			statusDir := gittest.InitBare(t, h.env.Dir, "status.git")
			if tc.status > 0 {
				addBranches(t, statusDir, tc.status)
			}
			srv := gittest.Daemon(t, h.env.Dir)
			rel, err := gittest.NewCutProxy(srv.URL+"/releases.git", 0)
			must(t, err)
			defer rel.Close()
			st, err := gittest.NewCutProxy(srv.URL+"/status.git", 0)
			must(t, err)
			defer st.Close()
			statusTable := ""
			if tc.status >= 0 {
				statusTable = fmt.Sprintf("[status_remote]\nurl = %q\n\n", st.URL)
			}
			peer, err := gittest.NewCutProxy(srv.URL+"/peer.git", 0)
			must(t, err)
			defer peer.Close()
			if tc.peer > 0 {
				addBranches(t, gittest.InitBare(t, h.env.Dir, "peer.git"), tc.peer)
				statusTable += fmt.Sprintf("[[status_peers]]\nurl = %q\n\n", peer.URL)
			}
			p := filepath.Join(h.env.Dir, "agent.toml")
			must(t, os.WriteFile(p, []byte(fmt.Sprintf("remotes = [%q]\nroot = %q\nstate_dir = %q\nallowed_dirs = [%q]\n\n%s[[node]]\nname = %q\nkey = \"node.key\"\n",
				rel.URL, h.env.Root, filepath.Join(h.env.Dir, "state"), h.etc, statusTable, h.node)), 0o644))
			cfg, err := config.Load(p)
			must(t, err)
			now := time.Now()
			a := openAgent(t, cfg, agent.Options{Engine: h.eng, Clock: func() time.Time { return now },
				Logger: slog.New(slog.NewTextHandler(&h.log, nil))})
			defer a.Close()
			if out, err := a.Once(t.Context()); err != nil || out != agent.Converged {
				t.Fatalf("first pass: %v %v\n%s", out, err, h.log.String())
			}
			relUp, relDown := rel.Bytes()
			stUp, stDown := st.Bytes()
			now = now.Add(cfg.Heartbeat.Duration + time.Minute) // a heartbeat is due
			if out, err := a.Once(t.Context()); err != nil || out != agent.Nothing {
				t.Fatalf("heartbeat pass: %v %v\n%s", out, err, h.log.String())
			}
			relUp2, relDown2 := rel.Bytes()
			stUp2, stDown2 := st.Bytes()
			relPass := (relUp2 - relUp) + (relDown2 - relDown)
			stPass := (stUp2 - stUp) + (stDown2 - stDown)
			// Another region's status repository is read only to gate a
			// wave, never pushed to.
			if peerUp, peerDown := peer.Bytes(); peerUp+peerDown != 0 {
				t.Errorf("status peer: %d B up, %d B down; want none", peerUp, peerDown)
			}
			t.Logf("10,000 status branches in the release repository, %s: heartbeat pass: release repository %d B up, %d B down; status repository %d B up, %d B down",
				tc.name, relUp2-relUp, relDown2-relDown, stUp2-stUp, stDown2-stDown)
			if tc.status < 0 {
				if relDown2-relDown < 10000*60 || stPass != 0 {
					t.Errorf("status pushed to the release repository: %d B down from it (its refs advertised), %d B to the status repository", relDown2-relDown, stPass)
				}
				return
			}
			// The release repository sees the idle poll only; the push
			// costs what the status repository holds.
			if relPass > 2048 {
				t.Errorf("release repository: %d B in a heartbeat pass, want the idle poll alone (≤ 2 KB)", relPass)
			}
			if stDown2-stDown < int64(tc.status)*60 || stDown2-stDown > int64(tc.status+10)*100 {
				t.Errorf("status push: %d B down for a repository of %d branches", stDown2-stDown, tc.status)
			}
			out, err := exec.Command("git", "-C", h.env.Repo, "for-each-ref", "refs/heads/status/"+h.node).CombinedOutput()
			if err != nil || len(out) != 0 {
				t.Errorf("the release repository has the node's status branch: %s %v", out, err)
			}
		})
	}
}
