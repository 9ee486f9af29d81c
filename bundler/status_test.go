package bundler_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullship/pullship/agent/report"
	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/bundlertest"
	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// statusEnv is a release of nodes cn, sg, us, eu, ap and af, with the
// nodes' private status keys.
type statusEnv struct {
	*bundlertest.Env
	keys map[string]signature.Signer
	now  time.Time
}

func newStatusEnv(t *testing.T) *statusEnv {
	e := &statusEnv{Env: bundlertest.NewEnv(t), keys: map[string]signature.Signer{}, now: time.Now().UTC().Truncate(time.Second)}
	dir := filepath.Join(e.Dir, "fleet")
	var nodes []bundlertest.Node
	for i, n := range []string{"cn", "sg", "us", "eu", "ap", "af"} {
		nodes = append(nodes, bundlertest.Node{Name: n, Region: n, Address: "10.0.0." + string(rune('1'+i)) + "/24"})
	}
	fleet := bundlertest.WriteFleet(t, dir, bundlertest.Fleet{Image: "pullship-test/app:1", Template: "node = {{.Node}}\n",
		Target: "/etc/app/app.conf", Nodes: nodes})
	for _, n := range nodes {
		p := filepath.Join(dir, "status-"+n.Name+".key")
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if e.keys[n.Name], _, err = schema.LoadPrivateKey(p, data, nil); err != nil {
			t.Fatal(err)
		}
	}
	img, _ := bundlertest.WriteImage(t, filepath.Join(e.Dir, "img.tar"),
		imagetest.File{Path: "app", Size: 1 << 10, Content: func() io.Reader { return imagetest.Random(1, 1<<10) }})
	e.Cut(t, fleet, img)
	return e
}

func nodeStatus(node string, at time.Time, members ...schema.StatusMember) *schema.Status {
	return &schema.Status{Node: node, Region: node, Time: at, TargetVersion: 1, AppliedVersion: 1,
		Container: schema.StatusContainer{State: "running"},
		Network:   schema.StatusNetwork{Driver: schema.DriverNone},
		Health:    schema.StatusHealth{OK: true},
		Cluster:   schema.StatusCluster{Joined: true, Members: members}}
}

// report commits st to branch status/<branch> signed with key and pushes it
// to the release repository.
func (e *statusEnv) report(t *testing.T, branch string, key signature.Signer, st *schema.Status) {
	t.Helper()
	store, err := repo.Init(filepath.Join(e.Dir, "agent-"+branch))
	must(t, err)
	rep, err := report.New(branch, key, store)
	must(t, err)
	if st.Node != branch {
		// A report about another node: commit through a reporter of that
		// node, then move it onto this branch.
		other, err := report.New(st.Node, key, store)
		must(t, err)
		must(t, other.Commit(st))
		h, err := other.Head()
		must(t, err)
		must(t, store.SetRef(rep.Ref(), plumbing.ZeroHash, h))
	} else {
		must(t, rep.Commit(st))
	}
	must(t, rep.Flush(context.Background(), e.Release.Remote))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// pushUnsigned pushes a status commit without status.toml.sig.
func (e *statusEnv) pushUnsigned(t *testing.T, node string, st *schema.Status) {
	st.Sequence = 1
	data, err := st.Encode()
	must(t, err)
	objs := repo.NewObjectStream(nil)
	tb := repo.NewTreeBuilder()
	must(t, tb.Add(bundle.StatusFile, filemode.Regular, objs.AddBytes(plumbing.BlobObject, data)))
	tree, err := tb.Build(objs)
	must(t, err)
	who := repo.Signature{Name: "x", Email: "x@x", When: st.Time}
	c, id, err := repo.EncodeCommit(repo.Commit{Tree: tree, Author: who, Committer: who, Message: "unsigned\n"})
	must(t, err)
	objs.AddBytes(plumbing.CommitObject, c)
	_, err = e.Release.Remote.Push(context.Background(), []repo.RefUpdate{{Name: bundle.StatusPrefix + node, New: id}}, objs)
	must(t, err)
}

func TestFleetStatus(t *testing.T) {
	e := newStatusEnv(t)
	ctx := context.Background()
	up := func(n string) schema.StatusMember { return schema.StatusMember{Node: "VerneMQ@" + n, Running: true} }
	down := func(n string) schema.StatusMember { return schema.StatusMember{Node: "VerneMQ@" + n} }

	e.report(t, "cn", e.keys["cn"], nodeStatus("cn", e.now.Add(-time.Minute), up("cn"), up("sg"), down("ap")))
	e.report(t, "sg", e.keys["cn"], nodeStatus("sg", e.now.Add(-time.Minute)))         // wrong key
	e.pushUnsigned(t, "us", nodeStatus("us", e.now.Add(-time.Minute)))                 // no .sig
	e.report(t, "eu", e.keys["eu"], nodeStatus("cn", e.now.Add(-time.Minute)))         // about cn
	e.report(t, "ap", e.keys["ap"], nodeStatus("ap", e.now.Add(-time.Hour), up("ap"))) // old
	// af reports nothing; zz is not in the release.
	e.pushUnsigned(t, "zz", nodeStatus("zz", e.now))

	f, err := e.Release.FleetStatus(ctx, e.Pinned, e.now, bundler.FleetOptions{Stale: 15 * time.Minute})
	must(t, err)
	want := map[string]bundle.ReportState{"cn": bundle.ReportOK, "sg": bundle.ReportForged, "us": bundle.ReportUnsigned,
		"eu": bundle.ReportInvalid, "ap": bundle.ReportStale, "af": bundle.ReportMissing, "zz": bundle.ReportUnknown}
	if len(f.Nodes) != len(want) {
		t.Fatalf("%d nodes, want %d: %+v", len(f.Nodes), len(want), f.Nodes)
	}
	for _, nr := range f.Nodes {
		if nr.State != want[nr.Node] {
			t.Errorf("node %s: state %s (%s), want %s", nr.Node, nr.State, nr.Problem, want[nr.Node])
		}
		if (nr.Status != nil) != (nr.State == bundle.ReportOK || nr.State == bundle.ReportStale) {
			t.Errorf("node %s: status shown for state %s", nr.Node, nr.State)
		}
	}
	if f.Bad() != 3 || f.Version != 1 {
		t.Fatalf("bad %d, version %d", f.Bad(), f.Version)
	}
	if f.Nodes[0].Age != time.Minute {
		t.Fatalf("age %s", f.Nodes[0].Age)
	}

	// The matrix: cn sees cn and sg, not ap; ap sees only itself.
	m := f.Matrix
	if len(m.Rows) != 2 || m.Rows[0] != "cn" || m.Rows[1] != "ap" {
		t.Fatalf("rows %v", m.Rows)
	}
	col := map[string]int{}
	for i, c := range m.Columns {
		col[c] = i
	}
	if len(m.Columns) != 3 {
		t.Fatalf("columns %v", m.Columns)
	}
	if m.Cells[0][col["VerneMQ@cn"]] != bundler.SeenRunning || m.Cells[0][col["VerneMQ@ap"]] != bundler.SeenDown ||
		m.Cells[1][col["VerneMQ@sg"]] != bundler.SeenAbsent || m.Cells[1][col["VerneMQ@ap"]] != bundler.SeenRunning {
		t.Fatalf("cells %v (columns %v)", m.Cells, m.Columns)
	}

	// A newer report signed right replaces the forged one; the second read
	// fetches only what is new.
	e.report(t, "sg", e.keys["sg"], nodeStatus("sg", e.now))
	f, err = e.Release.FleetStatus(ctx, e.Pinned, e.now, bundler.FleetOptions{})
	must(t, err)
	if f.Nodes[1].State != bundle.ReportOK {
		t.Fatalf("sg after a good report: %s %s", f.Nodes[1].State, f.Nodes[1].Problem)
	}
}

func TestVerifyStatusSignature(t *testing.T) {
	e := newStatusEnv(t)
	v := verifyHead(t, e.Env)
	n := v.Release.Nodes[0]
	st := nodeStatus(n.Name, e.now)
	st.Sequence = 1
	data, err := st.Encode()
	must(t, err)
	sign := func(k signature.Signer, d []byte) []byte {
		s, err := schema.SignWith(k, d)
		must(t, err)
		var f schema.SignatureFile
		f.Add(s)
		return f.Encode()
	}
	good := sign(e.keys[n.Name], data)
	must(t, bundle.VerifyStatusSignature(n, data, good))
	var fe *bundle.ForgedError
	for name, tc := range map[string]struct {
		data, sig []byte
		forged    bool
	}{
		"other key":   {data, sign(e.keys["sg"], data), true},
		"other bytes": {append([]byte("# x\n"), data...), good, true},
		"garbage sig": {data, []byte("nope"), false},
		"two sigs":    {data, append(append(good, '\n'), sign(e.keys["sg"], data)...), false},
		"empty sigs":  {data, nil, false},
	} {
		err := bundle.VerifyStatusSignature(n, tc.data, tc.sig)
		if err == nil || isForged(err, &fe) != tc.forged {
			t.Errorf("%s: %v (forged %v)", name, err, tc.forged)
		}
	}
}

func isForged(err error, fe **bundle.ForgedError) bool { return errors.As(err, fe) }

// FuzzVerifyStatusSignature feeds arbitrary status.toml and .sig bytes to
// the reader's checks: no panic, and nothing but the node's own signature
// over the exact bytes verifies. Seeds: schema/testdata/status and sig.
func FuzzVerifyStatusSignature(f *testing.F) {
	kp, err := schema.GenerateKey(schema.AlgECDSAP256SHA256, nil)
	must(f, err)
	signer, _, err := schema.LoadPrivateKey("k", kp.PrivatePEM, nil)
	must(f, err)
	n := schema.ReleaseNode{Name: "cn", StatusKeyID: kp.KeyID, StatusKey: string(kp.PublicPEM)}
	for _, dir := range []string{"status", "sig"} {
		files, _ := filepath.Glob(filepath.Join("..", "schema", "testdata", dir, "*"))
		for _, p := range files {
			if data, err := os.ReadFile(p); err == nil { // skips directories
				f.Add(data, data)
			}
		}
	}
	st := nodeStatus("cn", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st.Sequence = 1
	data, err := st.Encode()
	must(f, err)
	s, err := schema.SignWith(signer, data)
	must(f, err)
	var sf schema.SignatureFile
	sf.Add(s)
	f.Add(data, sf.Encode())
	f.Fuzz(func(t *testing.T, data, sig []byte) {
		if len(data) > schema.MaxFileSize {
			return
		}
		if err := bundle.VerifyStatusSignature(n, data, sig); err == nil {
			// Only our signature over data can verify; check with the key.
			sigs, perr := schema.ParseSignatures("status.toml.sig", sig)
			if perr != nil || len(sigs.Signatures) != 1 || sigs.Signatures[0].KeyID != kp.KeyID {
				t.Fatalf("verified a signature file %q", sig)
			}
		}
		_, _ = schema.ParseStatus("status.toml", data)
	})
}
