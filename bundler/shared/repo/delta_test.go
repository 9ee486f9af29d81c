package repo

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
)

// packBuilder writes packs entry by entry, deltas included, lies included.
type packBuilder struct {
	b bytes.Buffer
	n uint32
}

func newPackBuilder() *packBuilder {
	pb := &packBuilder{}
	pb.b.WriteString("PACK\x00\x00\x00\x02\x00\x00\x00\x00")
	return pb
}

// entry writes an entry header of typ and size, then prefix (a delta's base
// reference), then content deflated; it returns the entry's offset.
func (pb *packBuilder) entry(typ byte, size int64, prefix, content []byte) int64 {
	off := int64(pb.b.Len())
	c := typ<<4 | byte(size&15)
	size >>= 4
	for size > 0 {
		pb.b.WriteByte(c | 0x80)
		c = byte(size & 0x7f)
		size >>= 7
	}
	pb.b.WriteByte(c)
	pb.b.Write(prefix)
	zw := zlib.NewWriter(&pb.b)
	zw.Write(content)
	zw.Close()
	pb.n++
	return off
}

func (pb *packBuilder) object(t plumbing.ObjectType, content []byte) int64 {
	return pb.entry(byte(t), int64(len(content)), nil, content)
}

// ofsDelta writes a delta against the entry at base (git's offset encoding).
func (pb *packBuilder) ofsDelta(base int64, delta []byte) int64 {
	rel := int64(pb.b.Len()) - base
	var enc [10]byte
	i := len(enc) - 1
	enc[i] = byte(rel & 0x7f)
	for rel >>= 7; rel > 0; rel >>= 7 {
		rel--
		i--
		enc[i] = 0x80 | byte(rel&0x7f)
	}
	return pb.entry(packTypeOfsDelta, int64(len(delta)), enc[i:], delta)
}

func (pb *packBuilder) refDelta(base plumbing.Hash, delta []byte) int64 {
	return pb.entry(packTypeRefDelta, int64(len(delta)), base[:], delta)
}

func (pb *packBuilder) bytes() []byte {
	out := bytes.Clone(pb.b.Bytes())
	binary.BigEndian.PutUint32(out[8:], pb.n)
	sum := sha1.Sum(out)
	return append(out, sum[:]...)
}

func varint(v int64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// delta encodes a delta: its header (source and result sizes), then ops.
func delta(src, dst int64, ops ...[]byte) []byte {
	b := append(varint(src), varint(dst)...)
	for _, op := range ops {
		b = append(b, op...)
	}
	return b
}

// copyOp copies size bytes (at most 64 KiB) at off of the base.
func copyOp(off, size int64) []byte {
	cmd := byte(0x80)
	var args []byte
	for k := range 4 {
		if v := byte(off >> (8 * k)); v != 0 {
			cmd |= 1 << k
			args = append(args, v)
		}
	}
	if size == 0x10000 {
		size = 0
	}
	for k := range 3 {
		if v := byte(size >> (8 * k)); v != 0 {
			cmd |= 1 << (4 + k)
			args = append(args, v)
		}
	}
	return append([]byte{cmd}, args...)
}

func insertOp(data string) []byte { return append([]byte{byte(len(data))}, data...) }

// copyAll copies the whole of a base of size bytes.
func copyAll(size int64) []byte { return copyRange(0, size) }

// copyRange copies bytes from to end of the base.
func copyRange(from, end int64) []byte {
	var ops []byte
	for off := from; off < end; off += 0x10000 {
		ops = append(ops, copyOp(off, min(0x10000, end-off))...)
	}
	return ops
}

// receive stores data with ReceivePack in a fresh store.
func receive(t testing.TB, data []byte, inflateLimit int64) (*Store, error) {
	st, err := Init(t.TempDir())
	must(t, err)
	return st, st.ReceivePack(bytes.NewReader(data), inflateLimit)
}

// gitDeltaPack returns a pack git made with deltas (what a repacked server
// sends) and the commit it holds.
func gitDeltaPack(t testing.TB, args ...string) ([]byte, plumbing.Hash) {
	needGit(t)
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	git(t, dir, "init", "-q", work)
	var text bytes.Buffer
	for i := range 4000 {
		text.WriteString(strings.Repeat("line ", 3) + string(rune('a'+i%26)) + "\n")
	}
	for i := range 30 {
		fmt.Fprintf(&text, "change %d\n", i)
		must(t, os.WriteFile(filepath.Join(work, "f.txt"), text.Bytes(), 0o644))
		must(t, os.WriteFile(filepath.Join(work, "g.txt"), text.Bytes()[i*100:], 0o644))
		git(t, work, "add", ".")
		git(t, work, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", fmt.Sprint("commit ", i))
	}
	cmd := exec.Command("git", append([]string{"pack-objects", "--stdout", "--revs"}, args...)...)
	cmd.Dir = work
	cmd.Stdin = strings.NewReader("HEAD\n")
	pack, err := cmd.Output()
	must(t, err)
	return pack, plumbing.NewHash(strings.TrimSpace(git(t, work, "rev-parse", "HEAD")))
}

// TestReceivePackWithDeltas: packs git made with deltas (ofs-deltas, and
// ref-deltas as servers without ofs-delta send them; chains as deep as
// --aggressive makes) are resolved, however the stream is cut into reads,
// to the index go-git's parser makes, and git fsck agrees with the store.
func TestReceivePackWithDeltas(t *testing.T) {
	for name, args := range map[string][]string{
		"ofs-delta":  {"--window=10", "--depth=50"},
		"ref-delta":  {"--window=10", "--depth=50", "--no-delta-base-offset"},
		"deep chain": {"--window=250", "--depth=250"},
	} {
		t.Run(name, func(t *testing.T) {
			pack, head := gitDeltaPack(t, args...)
			_, entries, _, err := runIndexPack(pack, 1<<30, nil)
			must(t, err)
			deltas := 0
			for _, e := range entries {
				if e.delta {
					deltas++
				}
			}
			if deltas < 10 {
				t.Fatalf("git's pack has %d deltas: the test proves nothing", deltas)
			}
			for cut, wrap := range cutReaders {
				st, err := Init(t.TempDir())
				must(t, err)
				if err := st.ReceivePack(wrap(bytes.NewReader(pack)), 1<<30); err != nil {
					t.Fatalf("%s: %v", cut, err)
				}
				if !st.HasObject(head) {
					t.Fatalf("%s: HEAD missing after receive", cut)
				}
				must(t, st.SetRef("refs/heads/releases", plumbing.ZeroHash, head))
				git(t, st.Dir(), "fsck", "--strict", "--no-dangling")
			}
			// The same index as go-git's parser.
			p := filepath.Join(t.TempDir(), "p.pack")
			must(t, os.WriteFile(p, pack, 0o644))
			pf, err := os.Open(p)
			must(t, err)
			defer pf.Close()
			must(t, resolveDeltas(pf, entries, 1<<31))
			_, giw, err := parseSpooled(pf)
			must(t, err)
			sameIndex(t, entries, giw)
		})
	}
}

// hostileDeltaPacks are packs whose deltas go past a bound, with the error
// each must get.
func hostileDeltaPacks() map[string]struct {
	data []byte
	want error
	text string
} {
	base := []byte("hello pullship, a base for deltas\n")
	n := int64(len(base))
	baseID := HashObject(plumbing.BlobObject, base)
	type c = struct {
		data []byte
		want error
		text string
	}
	out := map[string]c{}
	one := func(name string, want error, text string, build func(pb *packBuilder, b int64)) {
		pb := newPackBuilder()
		build(pb, pb.object(plumbing.BlobObject, base))
		out[name] = c{pb.bytes(), want, text}
	}
	// The attack that took go-git's parser to 2.1 GB: a delta first,
	// claiming a result of 2 GiB, in a pack of a few KiB.
	pb := newPackBuilder()
	pb.refDelta(baseID, delta(n, 2<<30, copyAll(n)))
	pb.object(plumbing.BlobObject, base)
	out["delta first making 2 GiB"] = c{pb.bytes(), ErrDeltaLimit, "makes 2147483648 bytes"}
	one("result over the object limit", ErrDeltaLimit, "limit", func(pb *packBuilder, b int64) {
		pb.ofsDelta(b, delta(n, maxDeltaObject+1, copyAll(n)))
	})
	one("base size lie", ErrBadPack, "its base has", func(pb *packBuilder, b int64) {
		pb.ofsDelta(b, delta(n+1, n, copyAll(n)))
	})
	one("copy outside the base", ErrBadPack, "outside its base", func(pb *packBuilder, b int64) {
		pb.ofsDelta(b, delta(n, 10, copyOp(n-5, 10)))
	})
	one("result shorter than declared", ErrBadPack, "header says", func(pb *packBuilder, b int64) {
		pb.ofsDelta(b, delta(n, n+1, copyAll(n)))
	})
	one("insert past the result", ErrBadPack, "past its result", func(pb *packBuilder, b int64) {
		pb.ofsDelta(b, delta(n, 2, insertOp("abc")))
	})
	one("reserved instruction", ErrBadPack, "reserved", func(pb *packBuilder, b int64) {
		pb.ofsDelta(b, delta(n, 1, []byte{0}, insertOp("a")))
	})
	one("ref base not in the pack", ErrBadPack, "base not in the pack", func(pb *packBuilder, b int64) {
		pb.refDelta(plumbing.NewHash("0123456789012345678901234567890123456789"), delta(1, 1, insertOp("a")))
	})
	one("ofs base not an entry", ErrBadPack, "starts no earlier entry", func(pb *packBuilder, b int64) {
		pb.ofsDelta(b+1, delta(n, 1, insertOp("a")))
	})
	one("duplicate object", ErrBadPack, "twice", func(pb *packBuilder, b int64) {
		pb.object(plumbing.BlobObject, base)
	})
	one("chain too deep", ErrDeltaLimit, "deeper than", func(pb *packBuilder, b int64) {
		for i := range maxDeltaDepth + 1 {
			b = pb.ofsDelta(b, delta(n, n, insertOp(fmt.Sprintf("%03d", i)), copyOp(3, n-3)))
		}
	})
	// Big results that the cache cannot hold, in two chains whose deltas
	// alternate: every delta rebuilds its chain from its base (quadratic
	// work) until the work budget stops it.
	big := int64(maxDeltaObject)
	pb = newPackBuilder()
	tips := []int64{pb.object(plumbing.BlobObject, bytes.Repeat([]byte{'x'}, int(big))), pb.object(plumbing.BlobObject, bytes.Repeat([]byte{'y'}, int(big)))}
	for i := range 100 {
		k := i % 2
		tips[k] = pb.ofsDelta(tips[k], delta(big, big, insertOp(fmt.Sprintf("%03d", i)), copyRange(3, big)))
	}
	out["quadratic chain"] = c{pb.bytes(), ErrDeltaLimit, "limit"}
	return out
}

func TestDeltaBounds(t *testing.T) {
	for name, c := range hostileDeltaPacks() {
		st, err := receive(t, c.data, 1<<30)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: %v, want %v naming %q", name, err, c.want, c.text)
			continue
		}
		if left, _ := filepath.Glob(filepath.Join(st.Dir(), "objects", "pack", "*")); len(left) != 0 {
			t.Errorf("%s: left in objects/pack: %v", name, left)
		}
	}
}

// TestDeltaCut: a delta pack cut short (a dropped connection) is an I/O
// error, not a bad pack.
func TestDeltaCut(t *testing.T) {
	pack, _ := gitDeltaPack(t, "--depth=50")
	for _, at := range []int{5, 12, len(pack) / 3, len(pack) / 2, len(pack) - 21, len(pack) - 3} {
		_, err := receive(t, pack[:at], 1<<30)
		if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrBadPack) {
			t.Errorf("cut at %d of %d: %v, want an unexpected EOF that is no bad pack", at, len(pack), err)
		}
	}
}

// hostileMemory runs each hostile input in a child process (the test
// binary run again, with the input's file in env) and fails when the
// child's heap went over budget.
func hostileMemory(t *testing.T, test, env string, cases map[string][]byte, budget uint64) {
	t.Helper()
	for name, data := range cases {
		arg := name // no input file: the child makes the input named
		if data != nil {
			arg = filepath.Join(t.TempDir(), "input")
			must(t, os.WriteFile(arg, data, 0o644))
		}
		hostileChild(t, test, env, name, arg, budget)
	}
}

// hostileChild runs test in a child process with arg in env and fails when
// the child's heap went over budget.
func hostileChild(t *testing.T, test, env, name, arg string, budget uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v")
	cmd.Env = append(os.Environ(), env+"="+arg)
	out, err := cmd.CombinedOutput()
	var heap, rss uint64
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "peak heap "); i >= 0 {
			fmt.Sscanf(l[i:], "peak heap %d rss %d", &heap, &rss)
		}
	}
	if err != nil || heap == 0 {
		t.Errorf("%s: child failed (%v):\n%s", name, err, out)
		return
	}
	t.Logf("%s: peak heap %.1f MiB, peak RSS %.1f MiB", name, float64(heap)/(1<<20), float64(rss)/(1<<20))
	if heap > budget {
		t.Errorf("%s: heap reached %.1f MiB, budget %d MiB", name, float64(heap)/(1<<20), budget>>20)
	}
}

// childMemory is the child's side: run f, then print the peak heap (the
// heap memory obtained from the system, which is not given back to the
// count) and peak RSS.
func childMemory(t *testing.T, f func()) {
	f()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var rss uint64
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				fmt.Sscanf(strings.TrimSpace(l[6:]), "%d", &rss)
				rss <<= 10
			}
		}
	}
	t.Logf("peak heap %d rss %d", ms.HeapSys, rss)
}

// TestDeltaMemory: under every hostile delta pack, and receiving an honest
// one, the host's heap stays under 64 MiB.
func TestDeltaMemory(t *testing.T) {
	const env = "PULLSHIP_TEST_DELTA_MEMORY"
	if p := os.Getenv(env); p != "" {
		childMemory(t, func() {
			f, err := os.Open(p)
			must(t, err)
			defer f.Close()
			st, err := Init(t.TempDir())
			must(t, err)
			t.Logf("receive: %v", st.ReceivePack(f, 1<<30))
		})
		return
	}
	cases := map[string][]byte{}
	for name, c := range hostileDeltaPacks() {
		cases[name] = c.data
	}
	cases["honest, deep chains"], _ = gitDeltaPack(t, "--window=250", "--depth=250")
	hostileMemory(t, "TestDeltaMemory", env, cases, 64<<20)
}

func FuzzIndexPack(f *testing.F) {
	blob := []byte("hello pullship\n")
	f.Add(rawPack(rawEntry{3, int64(len(blob)), blob}))
	f.Add(rawPack(rawEntry{3, int64(len(blob)), blob}, rawEntry{1, 3, []byte("abc")}))
	pb := newPackBuilder()
	b := pb.object(plumbing.BlobObject, blob)
	b = pb.ofsDelta(b, delta(int64(len(blob)), 8, copyOp(0, 5), insertOp("pul"))) // "hellopul"
	pb.refDelta(HashObject(plumbing.BlobObject, blob), delta(int64(len(blob)), 3, insertOp("abc")))
	pb.ofsDelta(b, delta(8, 4, copyOp(4, 4)))
	f.Add(pb.bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sum, entries, spooled, err := runIndexPack(data, 1<<20, nil)
		// Cut into one-byte reads, the last with io.EOF, the same verdict.
		cutSum, _, cutSpooled, cutErr := runIndexPackFrom(cutReaders["one byte, eof with data"](bytes.NewReader(data)), 1<<20, nil)
		if (err == nil) != (cutErr == nil) {
			t.Fatalf("read whole: %v; cut in bytes: %v", err, cutErr)
		}
		if err != nil {
			return
		}
		if cutSum != sum || !bytes.Equal(cutSpooled, spooled) || !bytes.Equal(spooled, data) {
			t.Fatal("cut in bytes, spooled or summed differently")
		}
		p := filepath.Join(t.TempDir(), "p.pack")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		pf, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer pf.Close()
		err = resolveDeltas(pf, entries, 2<<20)
		if err == nil {
			err = writeIndex(bufio.NewWriter(io.Discard), entries, sum)
		}
		runtime.ReadMemStats(&after)
		// The indexer's buffers, the 2 MiB of objects its limits allow and
		// their copies; far less than the 16 MiB budget.
		if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
			t.Fatalf("indexing %d bytes allocated %d MiB", len(data), got>>20)
		}
		if err != nil {
			return
		}
		// What pullship accepts, go-git's parser accepts the same way.
		gsum, giw, err := parseSpooled(pf)
		if err != nil {
			t.Fatalf("accepted, go-git refuses: %v", err)
		}
		if gsum != sum {
			t.Fatalf("checksum %s, go-git %s", sum, gsum)
		}
		sameIndex(t, entries, giw)
	})
}

// TestFetchRepackedServer: a git daemon serving a repository that was
// repacked with deltas (git repack -adf) sends them; the fetch resolves
// them and git fsck agrees with the store.
func TestFetchRepackedServer(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	bare := newBare(t, base, "r.git")
	work := filepath.Join(t.TempDir(), "work")
	git(t, base, "init", "-q", work)
	var text bytes.Buffer
	for i := range 3000 {
		fmt.Fprintf(&text, "line %d of a node file\n", i)
	}
	for i := range 20 {
		fmt.Fprintf(&text, "change %d\n", i)
		must(t, os.WriteFile(filepath.Join(work, "f.txt"), text.Bytes(), 0o644))
		git(t, work, "add", ".")
		git(t, work, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", fmt.Sprint("release ", i))
	}
	git(t, work, "push", "-q", bare, "HEAD:refs/heads/releases")
	git(t, bare, "repack", "-adf", "--depth=50", "--window=50")
	head := plumbing.NewHash(strings.TrimSpace(git(t, work, "rev-parse", "HEAD")))
	url := startDaemon(t, base) + "/r.git"
	r, err := Open(t.Context(), url, Options{})
	must(t, err)
	st, err := Init(t.TempDir())
	must(t, err)
	got, err := r.Fetch(t.Context(), st, FetchRequest{Refs: []string{"refs/heads/releases:refs/heads/releases"}, MaxPackBytes: 64 << 20})
	must(t, err)
	if got["refs/heads/releases"] != head {
		t.Fatalf("fetched %v, want %s", got, head)
	}
	packs, _ := filepath.Glob(filepath.Join(st.Dir(), "objects", "pack", "*.idx"))
	if len(packs) != 1 {
		t.Fatalf("packs %v", packs)
	}
	if out := git(t, st.Dir(), "verify-pack", "-v", packs[0]); !strings.Contains(out, "chain length = ") {
		t.Fatalf("the server sent no deltas: the test proves nothing\n%s", out)
	}
	git(t, st.Dir(), "fsck", "--strict", "--no-dangling")
}

// sameIndex fails unless entries index the objects go-git's parser found,
// at the same offsets with the same CRC-32s.
func sameIndex(t testing.TB, entries []idxEntry, giw *idxfile.Writer) {
	t.Helper()
	got, want := indexEntries(t, entries), goGitEntries(t, giw)
	if len(got) != len(want) {
		t.Fatalf("%d entries, go-git %d", len(got), len(want))
	}
	for id, w := range want {
		if got[id] != w {
			t.Fatalf("%s: %v, go-git %v", id, got[id], w)
		}
	}
}
