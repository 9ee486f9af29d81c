package bundler

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// statusCommit writes a status commit holding report and sig (nil: no
// such file) on top of parent (zero: none) into st.
func statusCommit(t testing.TB, st *repo.Store, report, sig []byte, parent plumbing.Hash, when time.Time) plumbing.Hash {
	t.Helper()
	objs := repo.NewObjectStream(nil)
	tb := repo.NewTreeBuilder()
	for name, data := range map[string][]byte{bundle.StatusFile: report, schema.SigFileName(bundle.StatusFile): sig} {
		if data != nil {
			if err := tb.Add(name, filemode.Regular, objs.AddBytes(plumbing.BlobObject, data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tree, err := tb.Build(objs)
	if err != nil {
		t.Fatal(err)
	}
	who := repo.Signature{Name: "n", Email: "n@localhost", When: when}
	c := repo.Commit{Tree: tree, Author: who, Committer: who, Message: "status\n"}
	if !parent.IsZero() {
		c.Parents = []plumbing.Hash{parent}
	}
	data, id, err := repo.EncodeCommit(c)
	if err != nil {
		t.Fatal(err)
	}
	objs.AddBytes(plumbing.CommitObject, data)
	if err := st.Write(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
	return id
}

// FuzzMirrorStatusMerge: the two sides of a mirror hold status heads an
// attacker wrote (reports and signatures of its choosing, the one head
// descending from the other or not). Whatever the merge decides, a head it
// copies to either side carries a report the node's status key signed;
// and it stays within 16 MiB of allocations.
func FuzzMirrorStatusMerge(f *testing.F) {
	kp, err := schema.GenerateKey(schema.AlgEd25519, nil)
	if err != nil {
		f.Fatal(err)
	}
	signer, _, err := schema.LoadPrivateKey("k", kp.PrivatePEM, nil)
	if err != nil {
		f.Fatal(err)
	}
	n := schema.ReleaseNode{Name: "cn", StatusKeyID: kp.KeyID, StatusKey: string(kp.PublicPEM)}
	signed := func(seq int64) ([]byte, []byte) {
		st := &schema.Status{Node: "cn", Region: "cn", Sequence: seq, Time: time.Date(2026, 1, 1, 0, 0, int(seq), 0, time.UTC),
			TargetVersion: 1, AppliedVersion: 1, Container: schema.StatusContainer{State: "running"},
			Network: schema.StatusNetwork{Driver: schema.DriverNone}, Health: schema.StatusHealth{OK: true}}
		data, err := st.Encode()
		if err != nil {
			f.Fatal(err)
		}
		s, err := schema.SignWith(signer, data)
		if err != nil {
			f.Fatal(err)
		}
		var sf schema.SignatureFile
		sf.Add(s)
		return data, sf.Encode()
	}
	r1, s1 := signed(1)
	r2, s2 := signed(2)
	f.Add(r1, s1, r2, s2, byte(0))
	f.Add(r2, s2, r1, s1, byte(1))
	f.Add(r1, s1, r2, []byte("[[signature]]\n"), byte(2))
	f.Add([]byte("node = \"cn\"\nsequence = 99\n"), s1, r1, s1, byte(0))
	f.Fuzz(func(t *testing.T, repA, sigA, repB, sigB []byte, shape byte) {
		if len(repA)+len(sigA)+len(repB)+len(sigB) > 1<<20 {
			return
		}
		st, err := repo.Init(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		when := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		var a, b plumbing.Hash
		switch shape % 3 {
		case 0: // diverged
			a = statusCommit(t, st, repA, sigA, plumbing.ZeroHash, when)
			b = statusCommit(t, st, repB, sigB, plumbing.ZeroHash, when.Add(time.Second))
		case 1: // b descends from a
			a = statusCommit(t, st, repA, sigA, plumbing.ZeroHash, when)
			b = statusCommit(t, st, repB, sigB, a, when)
		default: // a descends from b
			b = statusCommit(t, st, repB, sigB, plumbing.ZeroHash, when)
			a = statusCommit(t, st, repA, sigA, b, when)
		}
		ref := bundle.StatusPrefix + "cn"
		r := &Repository{Cache: st}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		toSrc, toDst := r.mergeStatus([]string{ref}, map[string]plumbing.Hash{ref: a}, map[string]plumbing.Hash{ref: b},
			&MirrorResult{}, map[string]schema.ReleaseNode{"cn": n})
		runtime.ReadMemStats(&after)
		for _, u := range append(toSrc, toDst...) {
			if bundle.CheckReport(st, n, u.New).Status == nil {
				t.Fatalf("the merge copies %s, whose report the node did not sign", u.New)
			}
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
			t.Fatalf("merging allocated %d MiB", got>>20)
		}
	})
}
