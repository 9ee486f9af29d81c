package bundler_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
)

// Nothing a server or a node writes reaches the terminal raw: a genuinely
// signed report's strings (a compromised node's) are shown escaped, so an
// escape sequence cannot hide or forge a line of the table.
func TestFleetStatusFlattensHostileText(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	st := nodeStatus("cn", e.now)
	st.LastError = "ok\x1b[1A\x1b[2K\rall good\u202e"
	e.report(t, "cn", e.keys["cn"], st)
	f, err := e.Release.FleetStatus(ctx, e.Pinned, e.now, bundler.FleetOptions{})
	must(t, err)
	found := false
	for _, nr := range f.Nodes {
		for _, s := range []string{nr.Node, nr.Problem, lastError(nr)} {
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == 0x202e }) {
				t.Errorf("node %q: control character in %q", nr.Node, s)
			}
		}
		if nr.Node == "cn" {
			found = lastError(nr) == `ok\x1b[1A\x1b[2K\x0dall good\u202e`
		}
	}
	if !found {
		t.Errorf("cn's last error is not shown escaped: %+v", f.Nodes[0].Status)
	}
}

func lastError(nr bundle.NodeReport) string {
	if nr.Status == nil {
		return ""
	}
	return nr.Status.LastError
}

func TestFlatten(t *testing.T) {
	for in, want := range map[string]string{
		"plain ascii, ünïcode": "plain ascii, ünïcode",
		"a\x1b[2Kb\r\n\t":      `a\x1b[2Kb\x0d\x0a\x09`,
		"\u202eevil\u2066":     `\u202eevil\u2066`,
		"c1 \u009b31m":         `c1 \u009b31m`,
		"bad utf8 \xff":        "bad utf8 \ufffd",
	} {
		if got := bundler.Flatten(in); got != want {
			t.Errorf("Flatten(%q) = %q, want %q", in, got, want)
		}
	}
}

// A reader that saw report 2 of a node refuses report 1 put back at the
// head of its branch (a server replaying an older, genuinely signed report).
func TestFleetStatusRefusesOlderReport(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	srv, err := repo.OpenStore(e.Repo)
	must(t, err)
	e.report(t, "cn", e.keys["cn"], nodeStatus("cn", e.now.Add(-time.Minute)))
	first, err := srv.Ref(bundle.StatusPrefix + "cn")
	must(t, err)
	e.report(t, "cn", e.keys["cn"], nodeStatus("cn", e.now))
	f, err := e.Release.FleetStatus(ctx, e.Pinned, e.now, bundler.FleetOptions{})
	must(t, err)
	if f.Nodes[0].State != bundle.ReportOK || f.Nodes[0].Status.Sequence != 2 {
		t.Fatalf("report 2: %s %s", f.Nodes[0].State, f.Nodes[0].Problem)
	}
	cur, _ := srv.Ref(bundle.StatusPrefix + "cn")
	must(t, srv.SetRef(bundle.StatusPrefix+"cn", cur, first))
	f, err = e.Release.FleetStatus(ctx, e.Pinned, e.now, bundler.FleetOptions{})
	must(t, err)
	if f.Nodes[0].State != bundle.ReportInvalid || !strings.Contains(f.Nodes[0].Problem, "older report put back") {
		t.Fatalf("report 1 put back: %s %s", f.Nodes[0].State, f.Nodes[0].Problem)
	}
}

// A report names the manifest it applied: one that names another manifest
// under the same version (versions repeat after a version reset) does not
// count as on the release.
func TestFleetStatusChecksAppliedManifest(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	st := nodeStatus("cn", e.now)
	st.AppliedManifest = strings.Repeat("ab", 32)
	e.report(t, "cn", e.keys["cn"], st)
	f, err := e.Release.FleetStatus(ctx, e.Pinned, e.now, bundler.FleetOptions{})
	must(t, err)
	if !strings.Contains(f.Nodes[0].Problem, "not this release's") {
		t.Errorf("report of another manifest: problem %q", f.Nodes[0].Problem)
	}
	if w := f.Waves(); len(w) == 0 || w[0].Done != 0 {
		t.Errorf("a node on another manifest counted as done: %+v", w)
	}
	st = nodeStatus("cn", e.now)
	st.AppliedManifest = f.Manifest
	e.report(t, "cn", e.keys["cn"], st)
	if f, err = e.Release.FleetStatus(ctx, e.Pinned, e.now, bundler.FleetOptions{}); err != nil || f.Nodes[0].Problem != "" || f.Waves()[0].Done != 1 {
		t.Errorf("report of this manifest: %v %q %+v", err, f.Nodes[0].Problem, f.Waves())
	}
}
