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
// OpenBlob is safe to call from one goroutine while the fetch runs in
// another. An object the pack does not carry is read from the store, but
// only after [LivePack.Finish]: the store is not shared with the fetch.
type LivePack struct {
	store *Store

	mu      sync.Mutex
	objs    map[plumbing.Hash]livePackObject
	file    *os.File      // read handle on the spooled pack
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

// attach opens a read handle on the spool at path, whose objects add will
// announce. A LivePack follows one pack.
func (l *LivePack) attach(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		f.Close()
		return errors.New("live pack: already receiving a pack")
	}
	l.file = f
	return nil
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
	if l.file == nil {
		return nil
	}
	err := l.file.Close()
	l.file = nil
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
		f, done, ferr, changed := l.file, l.done, l.err, l.changed
		l.mu.Unlock()
		switch {
		case inCache && o.size == size:
			return &cachedBlob{Reader: bytes.NewReader(data), l: l, buf: data}, nil
		case ok:
			l.mu.Lock()
			l.spoolReads++
			l.mu.Unlock()
			return openSpooled(f, o, size)
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

// openSpooled inflates a checked entry from the spool.
func openSpooled(f *os.File, o livePackObject, size int64) (io.ReadCloser, error) {
	if o.typ != plumbing.BlobObject {
		return nil, fmt.Errorf("open blob %s: %w (a %s)", o.id, ErrNotFound, o.typ)
	}
	if o.size != size {
		return nil, fmt.Errorf("open blob %s: %w", o.id, &SizeMismatchError{Declared: size, Got: min(o.size, size+1)})
	}
	zr, err := zlib.NewReader(bufio.NewReaderSize(io.NewSectionReader(f, o.dataOffset, math.MaxInt64-o.dataOffset), 64<<10))
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", o.id, err)
	}
	return &exactReader{r: zr, left: size, id: o.id, size: size}, nil
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
