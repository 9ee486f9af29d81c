package repo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/klauspost/compress/zlib"
)

// liveCacheBytes bounds the inflated blobs a LivePack holds for its reader.
// While the pack arrives in the order the reader reads, each blob is
// inflated once, by the indexer: when the cache is full the fetch waits for
// the reader to take a blob (the reader, not the network, is then the slower
// of the two, so waiting costs no time and saves inflating again). A blob
// that finds the cache full while the reader waits for another (the pack
// comes in another order) or after the reader stopped is inflated again from
// the spool when it is read.
//
// A reader that takes no blob for liveRoomWait is taken for gone: the fetch
// stops caching (a caller that forgot StopReading costs that much, once).
const (
	liveCacheBytes = 8 << 20
	liveRoomWait   = 10 * time.Second
)

// LivePack lets a reader open the blobs of a pack while [Remote.Fetch] is
// still receiving it (FetchRequest.Live): each object becomes readable as
// soon as its bytes are spooled and its id is checked. The agent uses it to
// rebuild and load an image while its chunks still arrive, instead of
// waiting for the whole pack.
//
// A LivePack follows every pack a fetch receives (an image tag's segments
// come in one pack each): an object is readable from the pack that
// brought it, from its spool while it arrives and from its installed
// file once it is in the store (so a long fetch holds open files only for
// the packs still arriving and the blobs being read).
//
// OpenBlob is safe to call from one goroutine while the fetch runs in
// another. An object no pack carries is read from the store, but only
// after [LivePack.Finish]: the store is not shared with the fetch.
type LivePack struct {
	store *Store

	mu      sync.Mutex
	objs    map[plumbing.Hash]livePackObject
	spools  []*liveSpool  // the packs followed
	changed chan struct{} // closed (and replaced) on every add and on Finish
	done    bool
	err     error

	cached     map[plumbing.Hash][]byte // inflated blobs not yet read
	free       [][]byte                 // buffers to reuse
	bufBytes   int64                    // capacity of all buffers: cached, free and lent
	cacheBytes int64                    // bound of bufBytes

	room       *sync.Cond            // signalled when buffer's wait may be over
	wanted     map[plumbing.Hash]int // objects readers wait for (how many readers)
	readerDone bool                  // StopReading was called, Close, or the reader seems gone
	roomWait   time.Duration         // how long buffer waits for the reader before it stops caching
	spoolReads int                   // blobs inflated again from the spool (tests)
}

// livePackObject is where a checked entry's zlib data starts in the spool.
type livePackObject struct {
	id         plumbing.Hash
	typ        plumbing.ObjectType
	size       int64
	dataOffset int64
	src        *liveSpool
}

// liveSpool is one pack a LivePack follows: a read handle on its spool
// while it is received or read, its installed path once it is in place.
// Guarded by the LivePack's mu.
type liveSpool struct {
	f     *os.File
	path  string // set once installed
	users int    // readers of f
}

// liveObserver announces the objects of one pack.
type liveObserver struct {
	*LivePack
	spool *liveSpool
}

func (o liveObserver) add(obj livePackObject, data []byte) {
	obj.src = o.spool
	o.LivePack.add(obj, data)
}

// installed says the pack is now at path: readers open it there, and the
// spool's handle is closed once no reader uses it.
func (o liveObserver) installed(path string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.spool.path = path
	if o.spool.users == 0 && o.spool.f != nil {
		o.spool.f.Close()
		o.spool.f = nil
	}
}

// NewLivePack returns a LivePack that falls back to st.
func NewLivePack(st *Store) *LivePack {
	l := &LivePack{store: st, objs: make(map[plumbing.Hash]livePackObject), changed: make(chan struct{}),
		cached: make(map[plumbing.Hash][]byte), cacheBytes: liveCacheBytes, roomWait: liveRoomWait,
		wanted: make(map[plumbing.Hash]int)}
	l.room = sync.NewCond(&l.mu)
	return l
}

// StopReading says the reader opens no more blobs: the fetch stops caching
// blobs for it and no longer waits for room.
func (l *LivePack) StopReading() {
	l.mu.Lock()
	l.readerDone = true
	l.room.Broadcast()
	l.mu.Unlock()
}

// attach opens a read handle on the spool at path and returns the
// observer that announces its objects.
func (l *LivePack) attach(path string) (liveObserver, error) {
	f, err := os.Open(path)
	if err != nil {
		return liveObserver{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		f.Close()
		return liveObserver{}, errors.New("live pack: the fetch is finished")
	}
	sp := &liveSpool{f: f}
	l.spools = append(l.spools, sp)
	return liveObserver{LivePack: l, spool: sp}, nil
}

// buffer lends a buffer for a blob's inflated content (capacities rounded
// up to MiB, so buffers are reused). When the cache is full it waits for
// the reader to take a cached blob, unless the reader is waiting itself or
// has stopped (or took nothing for roomWait): then it returns nil and the
// blob is not cached.
func (l *LivePack) buffer(size int64) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := (size + 1<<20 - 1) &^ (1<<20 - 1)
	var deadline time.Time
	for {
		if l.readerDone || c > l.cacheBytes {
			return nil
		}
		for i, b := range l.free {
			if int64(cap(b)) >= size {
				l.free = append(l.free[:i], l.free[i+1:]...)
				return b[:size]
			}
		}
		for l.bufBytes+c > l.cacheBytes && len(l.free) > 0 {
			last := len(l.free) - 1
			l.bufBytes -= int64(cap(l.free[last]))
			l.free = l.free[:last]
		}
		if l.bufBytes+c <= l.cacheBytes {
			l.bufBytes += c
			return make([]byte, size, c)
		}
		for id := range l.wanted {
			if _, ok := l.objs[id]; !ok {
				return nil // a reader waits for an object still to come
			}
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(l.roomWait)
			t := time.AfterFunc(l.roomWait, func() {
				l.mu.Lock()
				l.room.Broadcast()
				l.mu.Unlock()
			})
			defer t.Stop()
		} else if !time.Now().Before(deadline) {
			l.readerDone = true
			return nil
		}
		l.room.Wait()
	}
}

func (l *LivePack) release(b []byte) {
	l.mu.Lock()
	l.free = append(l.free, b[:0])
	l.room.Broadcast()
	l.mu.Unlock()
}

func (l *LivePack) add(o livePackObject, data []byte) {
	l.mu.Lock()
	l.objs[o.id] = o
	if data != nil {
		if old, ok := l.cached[o.id]; ok {
			l.free = append(l.free, old[:0])
		}
		l.cached[o.id] = data
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// Finish says the fetch is over: err nil means every object it brought is
// in the store, so readers waiting for an object the pack did not carry
// read it from there; otherwise they get err.
func (l *LivePack) Finish(err error) {
	l.mu.Lock()
	if !l.done {
		l.done, l.err = true, err
		close(l.changed)
		l.changed = make(chan struct{})
	}
	l.mu.Unlock()
}

// Close releases the spool's read handle and the cache. Call it once no
// reader is left.
func (l *LivePack) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cached, l.free, l.bufBytes = nil, nil, 0
	l.readerDone = true
	l.room.Broadcast()
	var err error
	for _, sp := range l.spools {
		if sp.f != nil {
			err = errors.Join(err, sp.f.Close())
			sp.f = nil
		}
	}
	l.spools = nil
	return err
}

// OpenBlob streams blob id (exactly size bytes, as [Store.OpenBlob]): from
// the pack being received as soon as it arrives, or, once the fetch is
// finished, from the store. It waits for either, or for ctx.
func (l *LivePack) OpenBlob(ctx context.Context, id plumbing.Hash, size int64) (io.ReadCloser, error) {
	for {
		l.mu.Lock()
		o, ok := l.objs[id]
		data, inCache := l.cached[id]
		if inCache && o.size == size {
			delete(l.cached, id) // read once; a second read inflates again
		}
		done, ferr, changed := l.done, l.err, l.changed
		l.mu.Unlock()
		switch {
		case inCache && o.size == size:
			return &cachedBlob{Reader: bytes.NewReader(data), l: l, buf: data}, nil
		case ok:
			l.mu.Lock()
			l.spoolReads++
			l.mu.Unlock()
			return l.openSpooled(o, size)
		case done && ferr != nil:
			return nil, fmt.Errorf("open blob %s: %w", id, ferr)
		case done:
			return l.store.OpenBlob(id, size)
		}
		l.mu.Lock()
		l.wanted[id]++
		l.room.Broadcast() // a fetch waiting for room must go on
		l.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
		}
		l.mu.Lock()
		if l.wanted[id]--; l.wanted[id] == 0 {
			delete(l.wanted, id)
		}
		l.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// openSpooled inflates a checked entry from its pack: through the spool's
// handle while the pack is received, from its installed file after.
func (l *LivePack) openSpooled(o livePackObject, size int64) (io.ReadCloser, error) {
	if o.typ != plumbing.BlobObject {
		return nil, fmt.Errorf("open blob %s: %w (a %s)", o.id, ErrNotFound, o.typ)
	}
	if o.size != size {
		return nil, fmt.Errorf("open blob %s: %w", o.id, &SizeMismatchError{Declared: size, Got: min(o.size, size+1)})
	}
	sp := o.src
	l.mu.Lock()
	f, path := sp.f, sp.path
	if f != nil {
		sp.users++
	}
	l.mu.Unlock()
	var done func() error
	if f != nil {
		done = func() error {
			l.mu.Lock()
			defer l.mu.Unlock()
			if sp.users--; sp.users == 0 && sp.path != "" && sp.f != nil {
				sp.f.Close()
				sp.f = nil
			}
			return nil
		}
	} else {
		var err error
		if f, err = os.Open(path); err != nil {
			return nil, fmt.Errorf("open blob %s: %w", o.id, err)
		}
		done = f.Close
	}
	zr, err := zlib.NewReader(bufio.NewReaderSize(io.NewSectionReader(f, o.dataOffset, math.MaxInt64-o.dataOffset), 64<<10))
	if err != nil {
		done()
		return nil, fmt.Errorf("open blob %s: %w", o.id, err)
	}
	return &spooledBlob{exactReader: exactReader{r: zr, left: size, id: o.id, size: size}, done: done}, nil
}

// spooledBlob is a blob read from a pack file; Close lets the file go.
type spooledBlob struct {
	exactReader
	done func() error
}

func (b *spooledBlob) Close() error {
	err := b.exactReader.Close()
	if b.done != nil {
		err = errors.Join(err, b.done())
		b.done = nil
	}
	return err
}

// cachedBlob reads a blob the indexer inflated; Close gives its buffer back.
type cachedBlob struct {
	*bytes.Reader
	l   *LivePack
	buf []byte
}

func (c *cachedBlob) Close() error {
	if c.buf != nil {
		c.l.release(c.buf)
		c.buf = nil
	}
	return nil
}
