package bundle_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// heapBudget is what a host may use under any hostile input (the shipped
// unit caps the agent at 256 MiB).
const heapBudget = 64 << 20

var now = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// pinnedRoot is a valid one-key root 1 and its bytes.
func pinnedRoot(t testing.TB) (*schema.Root, []byte) {
	t.Helper()
	kp, err := schema.GenerateKey(schema.AlgEd25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := schema.NewRootKey(kp.PublicPEM)
	if err != nil {
		t.Fatal(err)
	}
	r := &schema.Root{Version: 1, Expires: now.Add(365 * 24 * time.Hour), Threshold: 1, Keys: []schema.RootKey{rk}}
	data, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return r, data
}

// commitFiles writes a commit whose tree holds files (path → bytes; the
// same bytes share one blob) into st.
func commitFiles(t testing.TB, st *repo.Store, files map[string][]byte) plumbing.Hash {
	t.Helper()
	objs := repo.NewObjectStream(nil)
	tb := repo.NewTreeBuilder()
	blobs := map[string]plumbing.Hash{}
	for p, data := range files {
		id, ok := blobs[string(data)]
		if !ok {
			id = objs.AddBytes(plumbing.BlobObject, data)
			blobs[string(data)] = id
		}
		if err := tb.Add(p, filemode.Regular, id); err != nil {
			t.Fatal(err)
		}
	}
	tree, err := tb.Build(objs)
	if err != nil {
		t.Fatal(err)
	}
	who := repo.Signature{Name: "m", Email: "m@localhost", When: now}
	data, id, err := repo.EncodeCommit(repo.Commit{Tree: tree, Author: who, Committer: who, Message: "x\n"})
	if err != nil {
		t.Fatal(err)
	}
	objs.AddBytes(plumbing.CommitObject, data)
	if err := st.Write(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
	return id
}

// hostileReleases are release trees an attacker on a server can write,
// each of which must be refused without reading much.
func hostileReleases(pinnedData []byte) map[string]map[string][]byte {
	big := bytes.Repeat([]byte("#"), schema.MaxRootFileLen)
	nested := []byte("version = " + strings.Repeat("[", schema.MaxRootFileLen-20))
	sig := bytes.Repeat([]byte("#"), schema.MaxSignatureFileLen)
	manifest := []byte("a = " + strings.Repeat("[", schema.MaxFileSize-8))
	out := map[string]map[string][]byte{}
	// One blob listed as root-2 … root-1000, and one as every .sig.
	many := map[string][]byte{"release.toml": manifest, "release.toml.sig": sig, "root/root-1.toml": pinnedData}
	for n := 2; n <= bundle.MaxRoots; n++ {
		many["root/"+schema.RootFileName(int64(n))] = big
		many["root/"+schema.RootFileName(int64(n))+".sig"] = sig
	}
	out["one blob as 999 roots and sigs"] = many
	out["nested root 2"] = map[string][]byte{"release.toml": manifest, "release.toml.sig": sig,
		"root/root-2.toml": nested, "root/root-2.toml.sig": sig}
	out["nested manifest"] = map[string][]byte{"release.toml": manifest, "release.toml.sig": sig}
	return out
}

// TestHostileReleasesHeapBudget reads and verifies every hostile release in
// a subprocess (so nothing else shares its heap) and checks the heap the
// process ever took from the OS stays under heapBudget.
func TestHostileReleasesHeapBudget(t *testing.T) {
	if os.Getenv("PULLSHIP_HEAP_CHILD") == "1" {
		hostileChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostileReleasesHeapBudget$", "-test.v")
	cmd.Env = append(os.Environ(), "PULLSHIP_HEAP_CHILD=1", "GOGC=100")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	i := bytes.Index(out, []byte("heap-sys "))
	if i < 0 {
		t.Fatalf("child said no heap size:\n%s", out)
	}
	f := strings.Fields(string(out[i:]))
	heap, _ := strconv.ParseInt(f[1], 10, 64)
	t.Logf("peak heap from the OS under hostile releases: %.1f MiB (budget %d MiB)", float64(heap)/(1<<20), heapBudget>>20)
	if heap > heapBudget {
		t.Fatalf("heap %d bytes, budget %d", heap, heapBudget)
	}
}

func hostileChild(t *testing.T) {
	pinned, pinnedData := pinnedRoot(t)
	st, err := repo.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cases := hostileReleases(pinnedData)
	commits := map[string]plumbing.Hash{}
	for name, files := range cases {
		commits[name] = commitFiles(t, st, files)
	}
	runtime.GC()
	for name, c := range commits {
		b, err := bundle.Read(st, c)
		if err == nil {
			_, err = bundle.Verify(b, pinned, now)
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		t.Logf("%s: %.200v", name, err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("heap-sys %d\n", ms.HeapSys)
}
