package bundle_test

import (
	"runtime"
	"testing"

	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// allocated runs fn and returns the bytes it allocated.
func allocated(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// FuzzVerifyRelease reads and verifies a release tree written by an
// attacker: a manifest, its signatures and a root chain in which one root
// blob is listed count times. Nothing verifies (the attacker has no key),
// nothing panics, and no input makes the reader allocate more than the heap
// budget.
func FuzzVerifyRelease(f *testing.F) {
	pinned, pinnedData := pinnedRoot(f)
	f.Add([]byte("version = 2\n"), []byte("[[signature]]\n"), []byte("version = 2"), []byte(""), uint16(3))
	f.Add([]byte("a = [[[[["), []byte("x"), []byte("version = [[[[[[[[[["), []byte("[[signature]]\nkeyid = \"\"\n"), uint16(999))
	f.Fuzz(func(t *testing.T, manifest, sig, root, rootSig []byte, count uint16) {
		files := map[string][]byte{"release.toml": manifest, "release.toml.sig": sig, "root/root-1.toml": pinnedData}
		for n := int64(2); n < 2+int64(count%bundle.MaxRoots); n++ {
			files["root/"+schema.RootFileName(n)] = root
			files["root/"+schema.RootFileName(n)+".sig"] = rootSig
		}
		st := freshStore(t)
		c := commitFiles(t, st, files)
		if got := allocated(func() {
			b, err := bundle.Read(st, c)
			if err == nil {
				if _, err := bundle.Verify(b, pinned, now); err == nil {
					t.Fatal("a release signed by no key verified")
				}
			}
		}); got > heapBudget {
			t.Fatalf("verifying allocated %d bytes, budget %d", got, heapBudget)
		}
	})
}

// FuzzCheckReport checks a status report an attacker wrote, as a wave gate,
// pullship status and the mirror's merge do: never ok without the node's
// key, within the heap budget.
func FuzzCheckReport(f *testing.F) {
	kp, err := schema.GenerateKey(schema.AlgEd25519, nil)
	if err != nil {
		f.Fatal(err)
	}
	node := schema.ReleaseNode{Name: "cn", StatusKeyID: kp.KeyID, StatusKey: string(kp.PublicPEM)}
	f.Add([]byte("node = \"cn\"\nsequence = 1\n"), []byte("[[signature]]\n"))
	f.Add([]byte("a.b.c.d.e.f.g = [[[[{x=1}]]]]"), []byte("[[signature]]\nkeyid = \""+kp.KeyID+"\"\nalgorithm = \"ed25519\"\nvalue = \"AAAA\"\n"))
	f.Fuzz(func(t *testing.T, status, sig []byte) {
		st := freshStore(t)
		c := commitFiles(t, st, map[string][]byte{bundle.StatusFile: status, bundle.StatusFile + ".sig": sig})
		if got := allocated(func() {
			if nr := bundle.CheckReport(st, node, c); nr.Status != nil {
				t.Fatalf("a report signed by no key is %s", nr.State)
			}
		}); got > heapBudget {
			t.Fatalf("checking allocated %d bytes, budget %d", got, heapBudget)
		}
	})
}

// freshStore is an empty object store for one input: a store that grows
// with every input would make each one slower than the last.
func freshStore(t *testing.T) *repo.Store {
	st, err := repo.Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}
