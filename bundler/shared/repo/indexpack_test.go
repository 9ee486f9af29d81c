package repo

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// fixturePack is the fixture's objects as pullship's pack writer writes them.
func fixturePack(t testing.TB, f *fixture) []byte {
	var b bytes.Buffer
	if _, _, err := WritePack(context.Background(), &b, f.stream); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func testLimits(inflate int64) packLimits {
	return packLimits{inflate: inflate, objects: defaultMaxObjects(inflate)}
}

// indexEntries lists what the indexer recorded: id → offset and CRC.
func indexEntries(t testing.TB, entries []idxEntry) map[plumbing.Hash][2]uint64 {
	t.Helper()
	out := map[plumbing.Hash][2]uint64{}
	for _, e := range entries {
		out[e.id] = [2]uint64{uint64(e.offset), uint64(e.crc)}
	}
	return out
}

// goGitEntries lists what go-git's index writer recorded.
func goGitEntries(t testing.TB, iw *idxfile.Writer) map[plumbing.Hash][2]uint64 {
	t.Helper()
	idx, err := iw.Index()
	if err != nil {
		t.Fatal(err)
	}
	it, err := idx.Entries()
	if err != nil {
		t.Fatal(err)
	}
	out := map[plumbing.Hash][2]uint64{}
	for {
		e, err := it.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[e.Hash] = [2]uint64{e.Offset, uint64(e.CRC32)}
	}
}

// parseSpooled indexes a whole pack file with go-git's parser: the
// independent reader the tests compare pullship's indexer with.
func parseSpooled(f *os.File) (plumbing.Hash, *idxfile.Writer, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return plumbing.ZeroHash, nil, err
	}
	iw := new(idxfile.Writer)
	p, err := packfile.NewParser(packfile.NewScanner(f), iw)
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	sum, err := p.Parse()
	if err != nil {
		return plumbing.ZeroHash, nil, fmt.Errorf("parse: %w", err)
	}
	return sum, iw, nil
}

// recorder is a packObserver keeping what it is told.
type recorder struct {
	objs []livePackObject
	data map[plumbing.Hash][]byte
}

func (r *recorder) buffer(size int64) []byte { return make([]byte, size) }
func (r *recorder) release([]byte)           {}
func (r *recorder) add(o livePackObject, data []byte) {
	r.objs = append(r.objs, o)
	if r.data == nil {
		r.data = map[plumbing.Hash][]byte{}
	}
	r.data[o.id] = data
}

func runIndexPack(data []byte, limit int64, obs packObserver) (plumbing.Hash, []idxEntry, []byte, error) {
	return runIndexPackFrom(bytes.NewReader(data), limit, obs)
}

func runIndexPackFrom(r io.Reader, limit int64, obs packObserver) (plumbing.Hash, []idxEntry, []byte, error) {
	var spool bytes.Buffer
	bw := bufio.NewWriter(&spool)
	sum, iw, err := indexPack(&readAfterErr{r: r}, bw, testLimits(limit), obs)
	bw.Flush()
	return sum, iw, spool.Bytes(), err
}

// readAfterErr fails a read that follows an error (io.EOF included), as a
// server whose connection stays open would block it.
type readAfterErr struct {
	r   io.Reader
	err error
}

func (r *readAfterErr) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, fmt.Errorf("read after %w", r.err)
	}
	n, err := r.r.Read(p)
	r.err = err
	return n, err
}

// cutReaders cut a stream into reads of other sizes: entry boundaries fall
// anywhere in the indexer's buffers.
var cutReaders = map[string]func(io.Reader) io.Reader{
	"one byte":      iotest.OneByteReader,
	"halves":        iotest.HalfReader,
	"eof with data": iotest.DataErrReader,
	"one byte, eof with data": func(r io.Reader) io.Reader {
		return iotest.DataErrReader(iotest.OneByteReader(r))
	},
}

func TestIndexPackMatchesGoGit(t *testing.T) {
	f := makeFixture(t, 11, plumbing.ZeroHash)
	data := fixturePack(t, f)
	rec := &recorder{}
	sum, iw, spooled, err := runIndexPack(data, 1<<30, rec)
	published := rec.objs
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(spooled, data) {
		t.Fatalf("spool holds %d bytes, the pack has %d", len(spooled), len(data))
	}
	tmp := filepath.Join(t.TempDir(), "p.pack")
	must(t, os.WriteFile(tmp, data, 0o644))
	pf, err := os.Open(tmp)
	must(t, err)
	defer pf.Close()
	gsum, giw, err := parseSpooled(pf)
	must(t, err)
	if sum != gsum {
		t.Fatalf("pack checksum %s, go-git %s", sum, gsum)
	}
	got, want := indexEntries(t, iw), goGitEntries(t, giw)
	if len(got) != len(f.stream.Objects()) || len(got) != len(want) {
		t.Fatalf("%d entries, go-git %d, stream %d", len(got), len(want), len(f.stream.Objects()))
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("%s: offset/crc %v, go-git %v", id, got[id], w)
		}
	}
	if len(published) != len(got) {
		t.Fatalf("published %d objects of %d", len(published), len(got))
	}
	for _, o := range published {
		if o.typ != plumbing.BlobObject {
			continue
		}
		o.src = &liveSpool{f: pf}
		rc, err := NewLivePack(nil).openSpooled(o, o.size)
		must(t, err)
		b, err := io.ReadAll(rc)
		must(t, err)
		src, err := f.stream.Open(Object{ID: o.id, Type: o.typ, Size: o.size})
		must(t, err)
		want, err := io.ReadAll(src)
		must(t, err)
		if !bytes.Equal(b, want) {
			t.Fatalf("blob %s read back from its offset differs", o.id)
		}
		if !bytes.Equal(rec.data[o.id], want) {
			t.Fatalf("blob %s inflated by the indexer differs", o.id)
		}
	}
}

// rawEntry is a pack entry written as given, lies included.
type rawEntry struct {
	typ      byte
	declared int64
	content  []byte
}

// rawPack frames entries as a pack with a correct trailer.
func rawPack(entries ...rawEntry) []byte {
	var b bytes.Buffer
	b.WriteString("PACK")
	binary.Write(&b, binary.BigEndian, uint32(2))
	binary.Write(&b, binary.BigEndian, uint32(len(entries)))
	for _, e := range entries {
		size := e.declared
		c := e.typ<<4 | byte(size&15)
		size >>= 4
		for size > 0 {
			b.WriteByte(c | 0x80)
			c = byte(size & 0x7f)
			size >>= 7
		}
		b.WriteByte(c)
		zw := zlib.NewWriter(&b)
		zw.Write(e.content)
		zw.Close()
	}
	sum := sha1.Sum(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
}

func TestIndexPackRejects(t *testing.T) {
	blob := []byte("hello pullship\n")
	good := rawPack(rawEntry{3, int64(len(blob)), blob})
	if _, _, _, err := runIndexPack(good, 1<<20, nil); err != nil {
		t.Fatalf("well-formed pack: %v", err)
	}
	badTrailer := bytes.Clone(good)
	badTrailer[len(badTrailer)-1] ^= 1
	flipped := bytes.Clone(good)
	flipped[14] ^= 0x40 // inside the zlib stream
	cases := map[string]struct {
		data []byte
		want string
	}{
		"empty":              {nil, "header"},
		"not a pack":         {[]byte("NOPE\x00\x00\x00\x02\x00\x00\x00\x01"), "signature"},
		"version 4":          {append([]byte("PACK\x00\x00\x00\x04"), good[8:]...), "version 4"},
		"truncated entry":    {good[:20], "entry 0"},
		"no trailer":         {good[:len(good)-20], "trailer"},
		"short trailer":      {good[:len(good)-3], "trailer"},
		"bad trailer":        {badTrailer, "trailer checksum"},
		"corrupt zlib":       {flipped, "entry 0"},
		"data after trailer": {append(bytes.Clone(good), 0), "after the trailer"},
		"too few entries":    {append(append([]byte("PACK\x00\x00\x00\x02\x00\x00\x00\x02"), good[12:len(good)-20]...), good[len(good)-20:]...), "entry 1"},
		"declares less":      {rawPack(rawEntry{3, int64(len(blob)) - 1, blob}), "inflates past"},
		"declares more":      {rawPack(rawEntry{3, int64(len(blob)) + 1, blob}), "inflates to"},
		"type 5":             {rawPack(rawEntry{5, int64(len(blob)), blob}), "type 5"},
		"type 0":             {rawPack(rawEntry{0, int64(len(blob)), blob}), "type 0"},
		"over the limit":     {rawPack(rawEntry{3, 2 << 20, make([]byte, 2<<20)}), "limit"},
		"4 billion entries":  {[]byte("PACK\x00\x00\x00\x02\xff\xff\xff\xff"), "objects declared"},
		"size overflow":      {append([]byte("PACK\x00\x00\x00\x02\x00\x00\x00\x01"), 0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), "overflows"},
	}
	for name, c := range cases {
		_, _, _, err := runIndexPack(c.data, 1<<20, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one naming %q", name, err, c.want)
		}
		for cut, wrap := range cutReaders {
			_, _, _, err := runIndexPackFrom(wrap(bytes.NewReader(c.data)), 1<<20, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s, %s: err %v, want one naming %q", name, cut, err, c.want)
			}
		}
	}
}

// spoolRecorder is a recorder that also notes how much of the pack the
// spool holds when each entry is announced.
type spoolRecorder struct {
	recorder
	spool   *bytes.Buffer
	spooled []int
}

func (r *spoolRecorder) add(o livePackObject, data []byte) {
	r.recorder.add(o, data)
	r.spooled = append(r.spooled, r.spool.Len())
}

// TestIndexPackCutReads: however the stream is cut into reads, the pack is
// indexed the same (offsets and CRC-32s included), spooled whole, r is not
// read after its io.EOF, and each entry is in the spool file, up to its
// last byte, when obs learns of it.
func TestIndexPackCutReads(t *testing.T) {
	f := makeFixture(t, 15, plumbing.ZeroHash)
	data := fixturePack(t, f)
	index := func(r io.Reader) (plumbing.Hash, []idxEntry, []byte, *spoolRecorder, error) {
		var spool bytes.Buffer
		bw := bufio.NewWriter(&spool)
		rec := &spoolRecorder{spool: &spool}
		sum, iw, err := indexPack(&readAfterErr{r: r}, bw, testLimits(1<<30), rec)
		bw.Flush()
		return sum, iw, spool.Bytes(), rec, err
	}
	wantSum, wantIW, _, wantRec, err := index(bytes.NewReader(data))
	must(t, err)
	want := indexEntries(t, wantIW)
	// Entry i ends where entry i+1 starts; the last one at the trailer.
	ends := map[plumbing.Hash]int{}
	for id, e := range want {
		end := len(data) - packTrailerLen
		for _, o := range want {
			if o[0] > e[0] && int(o[0]) < end {
				end = int(o[0])
			}
		}
		ends[id] = end
	}
	for i, o := range wantRec.objs {
		if wantRec.spooled[i] != ends[o.id] {
			t.Fatalf("entry %s ends at %d, spool held %d when announced", o.id, ends[o.id], wantRec.spooled[i])
		}
	}
	for cut, wrap := range cutReaders {
		sum, iw, spooled, rec, err := index(wrap(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("%s: %v", cut, err)
		}
		if sum != wantSum || !bytes.Equal(spooled, data) {
			t.Fatalf("%s: sum %s, %d bytes spooled; want %s, %d", cut, sum, len(spooled), wantSum, len(data))
		}
		got := indexEntries(t, iw)
		if len(got) != len(want) {
			t.Fatalf("%s: %d entries, want %d", cut, len(got), len(want))
		}
		for id, w := range want {
			if got[id] != w {
				t.Errorf("%s: %s: offset/crc %v, want %v", cut, id, got[id], w)
			}
		}
		if fmt.Sprint(rec.objs, rec.spooled) != fmt.Sprint(wantRec.objs, wantRec.spooled) {
			t.Errorf("%s: announced %v (spool at %v), want %v (%v)", cut, rec.objs, rec.spooled, wantRec.objs, wantRec.spooled)
		}
	}
}

// TestPackReaderKeepsBuffered: what br holds when it reads more (a Peek
// past its buffered bytes; flate and zlib read only when br is empty) is
// kept until consumed, then handed on at its offset.
func TestPackReaderKeepsBuffered(t *testing.T) {
	data := make([]byte, 600<<10)
	for i := range data {
		data[i] = byte(i ^ i>>9)
	}
	var spool bytes.Buffer
	bw := bufio.NewWriter(&spool)
	pr := newPackReader(&readAfterErr{r: iotest.HalfReader(bytes.NewReader(data))}, bw)
	for off := 0; off < len(data); {
		n := min(len(data)-off, 50<<10+7)
		b, err := pr.br.Peek(n)
		must(t, err)
		if !bytes.Equal(b, data[off:off+n]) {
			t.Fatalf("at %d: peeked other bytes", off)
		}
		d, _ := pr.br.Discard(n/3 + 1)
		off += d
		must(t, pr.flush())
		if pr.offset() != int64(off) {
			t.Fatalf("offset %d, consumed %d", pr.offset(), off)
		}
	}
	if _, err := pr.br.ReadByte(); err != io.EOF {
		t.Fatalf("after the end: %v", err)
	}
	must(t, bw.Flush())
	if !bytes.Equal(spool.Bytes(), data) || pr.crc.Sum32() != crc32.ChecksumIEEE(data) {
		t.Fatalf("spooled %d bytes of %d, or crc differs", spool.Len(), len(data))
	}
}

// eofWithData returns all its data together with io.EOF, then fails any
// further read: a server whose connection stays open after the end of its
// sideband stream (git daemon --inetd) blocks such a read for ever.
type eofWithData struct {
	data []byte
	done bool
}

func (r *eofWithData) Read(p []byte) (int, error) {
	if r.done {
		return 0, errors.New("read after io.EOF")
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	if len(r.data) == 0 {
		r.done = true
		return n, io.EOF
	}
	return n, nil
}

func TestIndexPackStopsAtEOF(t *testing.T) {
	f := makeFixture(t, 14, plumbing.ZeroHash)
	data := fixturePack(t, f)
	var spool bytes.Buffer
	bw := bufio.NewWriter(&spool)
	if _, _, err := indexPack(&eofWithData{data: data}, bw, testLimits(1<<30), nil); err != nil {
		t.Fatalf("pack ending with (n, io.EOF): %v", err)
	}
}

// TestReceivePackRejectsLeavesNothing: a bad pack from a server installs
// nothing and leaves no temporary file.
func TestReceivePackRejectsLeavesNothing(t *testing.T) {
	st, err := Init(t.TempDir())
	must(t, err)
	f := makeFixture(t, 12, plumbing.ZeroHash)
	data := fixturePack(t, f)
	data[len(data)/2] ^= 0x10
	if err := st.ReceivePack(bytes.NewReader(data), 1<<30); err == nil {
		t.Fatal("altered pack accepted")
	}
	left, err := os.ReadDir(filepath.Join(st.Dir(), "objects", "pack"))
	must(t, err)
	if len(left) != 0 {
		t.Fatalf("left in objects/pack: %v", left)
	}
	if st.HasObject(f.release) {
		t.Fatal("object of a rejected pack is visible")
	}
	// A header claiming 4 billion entries, then a delta (the go-git
	// fallback): refused without preallocating for the claim.
	bomb := append([]byte("PACK\x00\x00\x00\x02\xff\xff\xff\xff"), 0x60|3, 0x01, 0x78, 0x9c, 0x03, 0x00)
	if err := st.ReceivePack(bytes.NewReader(bomb), 1<<30); err == nil {
		t.Fatal("a 4-billion-entry pack accepted")
	}
	// A stream error (the fetch size limit) comes through as itself.
	err = st.ReceivePack(&limitedReader{r: bytes.NewReader(fixturePack(t, f)), left: 1000, what: "pack", err: ErrPackTooLarge}, 1<<30)
	if !errors.Is(err, ErrPackTooLarge) {
		t.Fatalf("over the pack limit: %v", err)
	}
}

func TestLivePack(t *testing.T) {
	st, err := Init(t.TempDir())
	must(t, err)
	f := makeFixture(t, 13, plumbing.ZeroHash)
	data := fixturePack(t, f)
	ctx := context.Background()

	// The first object of the pack is readable while the rest is held back.
	first := f.stream.Objects()[0]
	if first.Type != plumbing.BlobObject {
		t.Fatalf("fixture starts with a %s", first.Type)
	}
	live := NewLivePack(st)
	defer live.Close()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- st.receivePack(pr, testLimits(1<<30), live) }()
	// A blob not in this pack waits for Finish.
	notInPack := make(chan error, 1)
	go func() {
		_, err := live.OpenBlob(ctx, plumbing.NewHash("0123456789012345678901234567890123456789"), 1)
		notInPack <- err
	}()
	half := len(data) / 2
	if _, err := pw.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	rc, err := live.OpenBlob(ctx, first.ID, first.Size)
	must(t, err)
	b, err := io.ReadAll(rc)
	must(t, err)
	if !bytes.Equal(b, f.blobs[first.ID]) {
		t.Fatal("live blob differs")
	}
	if _, err := live.OpenBlob(ctx, first.ID, first.Size+1); err == nil {
		t.Fatal("wrong size accepted")
	}
	// The last blob of the pack is not there yet.
	var last Object
	for _, o := range f.stream.Objects() {
		if o.Type == plumbing.BlobObject {
			last = o
		}
	}
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = live.OpenBlob(tctx, last.ID, last.Size)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blob not yet received: %v", err)
	}
	select {
	case err := <-notInPack:
		t.Fatalf("blob outside the pack answered before Finish: %v", err)
	default:
	}
	if _, err := pw.Write(data[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	must(t, <-done)
	live.Finish(nil)
	if err := <-notInPack; !errors.Is(err, plumbing.ErrObjectNotFound) && !errors.Is(err, ErrNotFound) {
		t.Fatalf("blob in neither pack nor store: %v", err)
	}
	// After Finish, blobs come from the store too.
	for id, want := range f.blobs {
		rc, err := live.OpenBlob(ctx, id, int64(len(want)))
		must(t, err)
		got, err := io.ReadAll(rc)
		must(t, err)
		if !bytes.Equal(got, want) {
			t.Fatalf("blob %s differs", id)
		}
	}

	// A reader that lags gets every blob right: those that found the cache
	// full, and second reads, are inflated again from the spool.
	st2, err := Init(t.TempDir())
	must(t, err)
	small := NewLivePack(st2)
	defer small.Close()
	small.cacheBytes = 1 << 20
	small.roomWait = 10 * time.Millisecond // no reader: the fetch stops waiting
	must(t, st2.receivePack(bytes.NewReader(data), testLimits(1<<30), small))
	if len(small.cached) == 0 || len(small.cached) == len(f.blobs) {
		t.Fatalf("%d of %d chunk blobs cached: the bound is not exercised", len(small.cached), len(f.blobs))
	}
	for range 2 {
		for id, want := range f.blobs {
			rc, err := small.OpenBlob(ctx, id, int64(len(want)))
			must(t, err)
			got, err := io.ReadAll(rc)
			must(t, err)
			must(t, rc.Close())
			if !bytes.Equal(got, want) {
				t.Fatalf("blob %s differs", id)
			}
		}
	}
	if len(small.cached) != 0 {
		t.Fatalf("%d blobs left cached after every blob was read", len(small.cached))
	}

	// A reader slower than the pack, reading in the pack's order: the
	// fetch waits for it to take blobs instead of dropping them from the
	// cache, so no blob is inflated twice.
	st3, err := Init(t.TempDir())
	must(t, err)
	slow := NewLivePack(st3)
	defer slow.Close()
	slow.cacheBytes = 2 << 20 // the 1 MiB blob fills it alone
	fetched := make(chan error, 1)
	go func() {
		err := st3.receivePack(bytes.NewReader(data), testLimits(1<<30), slow)
		slow.Finish(err)
		fetched <- err
	}()
	var order recorder // the pack's order
	if _, _, _, err := runIndexPack(data, 1<<30, &order); err != nil {
		t.Fatal(err)
	}
	for _, o := range order.objs {
		if o.typ != plumbing.BlobObject {
			continue
		}
		time.Sleep(20 * time.Millisecond)
		rc, err := slow.OpenBlob(ctx, o.id, o.size)
		must(t, err)
		got, err := io.ReadAll(rc)
		must(t, err)
		must(t, rc.Close())
		if want, ok := f.blobs[o.id]; (ok && !bytes.Equal(got, want)) || int64(len(got)) != o.size {
			t.Fatalf("blob %s differs", o.id)
		}
	}
	slow.StopReading()
	must(t, <-fetched)
	if slow.spoolReads != 0 {
		t.Fatalf("%d blobs inflated again from the spool: the fetch did not wait for its reader", slow.spoolReads)
	}

	// A failed fetch fails the waiters with its error.
	failed := NewLivePack(st)
	wait := make(chan error, 1)
	go func() {
		_, err := failed.OpenBlob(ctx, plumbing.NewHash("0123456789012345678901234567890123456789"), 1)
		wait <- err
	}()
	boom := errors.New("connection reset")
	failed.Finish(boom)
	if err := <-wait; !errors.Is(err, boom) {
		t.Fatalf("waiter after a failed fetch: %v", err)
	}
}

// scribbler hands out one buffer and, when it is given back, writes over
// it at once, as a pool serving another connection would.
type scribbler struct {
	recorder
	buf      []byte
	released int
}

func (s *scribbler) buffer(size int64) []byte {
	if int64(cap(s.buf)) < size {
		s.buf = make([]byte, size)
	}
	return s.buf[:size]
}

func (s *scribbler) release(b []byte) {
	s.released++
	copy(b, make([]byte, len(b))) // copy, not clear: -race sees a copy's writes
}

// TestIndexPackReleasesHashedBuffers: a blob cut or corrupted mid-entry
// gives its observer's buffer back only once the hasher is done with it
// (run under -race: a buffer handed back while still being hashed races
// with the pool's next user).
func TestIndexPackReleasesHashedBuffers(t *testing.T) {
	blob := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(blob)
	pb := newPackBuilder()
	pb.object(plumbing.BlobObject, []byte("small"))
	off := pb.object(plumbing.BlobObject, blob)
	data := pb.bytes()
	corrupt := bytes.Clone(data)
	for i := off + 64<<10; i < off+64<<10+64; i++ {
		corrupt[i] ^= 0xff
	}
	cases := map[string][]byte{
		"cut":     data[:off+512<<10],
		"corrupt": corrupt,
	}
	for name, pack := range cases {
		t.Run(name, func(t *testing.T) {
			obs := &scribbler{}
			_, _, _, err := runIndexPackFrom(iotest.HalfReader(bytes.NewReader(pack)), 1<<30, obs)
			if err == nil {
				t.Fatal("indexed a broken pack")
			}
			if obs.released != 1 {
				t.Fatalf("buffer given back %d times, want 1 (%v)", obs.released, err)
			}
		})
	}
}
