package repo

import (
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
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
	return &LivePack{store: st, objs: make(map[plumbing.Hash]livePackObject), changed: make(chan struct{})}
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

func (l *LivePack) add(o livePackObject) {
	l.mu.Lock()
	l.objs[o.id] = o
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

// Close releases the spool's read handle. Call it once no reader is left.
func (l *LivePack) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
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
		f, done, ferr, changed := l.file, l.done, l.err, l.changed
		l.mu.Unlock()
		switch {
		case ok:
			return openSpooled(f, o, size)
		case done && ferr != nil:
			return nil, fmt.Errorf("open blob %s: %w", id, ferr)
		case done:
			return l.store.OpenBlob(id, size)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
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
	zr, err := zlib.NewReader(io.NewSectionReader(f, o.dataOffset, math.MaxInt64-o.dataOffset))
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", o.id, err)
	}
	return &exactReader{r: zr, left: size, id: o.id, size: size}, nil
}
