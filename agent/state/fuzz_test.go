package state

import (
	"os"
	"runtime"
	"testing"
)

// FuzzLoad decodes state.toml and a journal as a host finds them on disk
// (a torn write, a disk error, an edit): a clear error or a state, never a
// panic, and never more than 64 MiB allocated.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("version = 3\nmanifest_sha256 = \"ab\"\nroot_version = 1\n[nodes.a]\napplied = 3\n"), []byte("node = \"a\"\nstep = \"files\"\n[[file]]\ntarget = \"/x\"\n"))
	f.Add([]byte("[nodes]\n"+"a = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["), []byte("x.y.z.w = 1"))
	f.Fuzz(func(t *testing.T, state, journal []byte) {
		s, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := os.WriteFile(s.Path("state.toml"), state, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.Path("journal-a.toml"), journal, 0o600); err != nil {
			t.Fatal(err)
		}
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		s.Load()
		s.Journal("a")
		runtime.ReadMemStats(&b)
		if got := b.TotalAlloc - a.TotalAlloc; got > 64<<20 {
			t.Fatalf("decoding allocated %d bytes", got)
		}
	})
}
