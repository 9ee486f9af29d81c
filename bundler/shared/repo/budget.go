package repo

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"strings"
)

// ErrStoreBudget reports a fetch that would take the store beyond its
// byte budget (Store.SetBudget): nothing of it is stored.
var ErrStoreBudget = errors.New("object store budget exceeded")

// SetBudget bounds the bytes the store's files may take on disk (0: no
// bound). Every pack received from a remote (and every copy from a
// directory remote) is bounded by what the budget leaves when it starts,
// less what the packs being received at the same time may take: beyond
// it, the pack is refused (ErrStoreBudget) and nothing of it stays. Packs
// written locally (an image's trees and commits, status commits: a few
// KiB) are not bounded, but count.
func (s *Store) SetBudget(n int64) {
	s.budgetMu.Lock()
	defer s.budgetMu.Unlock()
	s.budget = n
}

// Usage returns the bytes the store's files take on disk: packs, their
// indexes, loose objects, refs, and what interrupted writes left. The
// temporary files of packs being received are left out (their room is
// reserved).
func (s *Store) Usage() (int64, error) {
	receiving := s.receiving.Load() > 0
	var n int64
	err := filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walked
			}
			return err
		}
		name := d.Name()
		if d.IsDir() || receiving && (strings.HasPrefix(name, ".tmp_pack.tmp-") || strings.HasPrefix(name, ".tmp_idx.tmp-")) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		n += fi.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", s.dir, err)
	}
	return n, nil
}

// Room returns what the budget leaves for the next pack: the budget less
// the store's usage and the room reserved by packs being received
// (math.MaxInt64 without a budget).
func (s *Store) Room() (int64, error) {
	s.budgetMu.Lock()
	defer s.budgetMu.Unlock()
	return s.room()
}

func (s *Store) room() (int64, error) {
	if s.budget <= 0 {
		return math.MaxInt64, nil
	}
	used, err := s.Usage()
	if err != nil {
		return 0, err
	}
	return s.budget - used - s.reserved, nil
}

// reservation is the room one pack being received may take.
type reservation struct {
	s      *Store
	bytes  int64 // math.MaxInt64 without a budget
	budget int64
}

// reserve sets aside room for a pack of at most limit bytes of at most
// objects objects (0: as much as the budget leaves) and its index. With
// no room left it fails at once, before anything is asked of the remote.
// A pack's room is given back only once it is installed (and counts in
// the store's usage) or dropped, so packs received at once cannot
// together go beyond the budget.
func (s *Store) reserve(limit int64, objects int) (*reservation, error) {
	s.budgetMu.Lock()
	defer s.budgetMu.Unlock()
	room, err := s.room()
	if err != nil {
		return nil, err
	}
	r := &reservation{s: s, bytes: math.MaxInt64, budget: s.budget}
	if s.budget > 0 {
		if room <= 0 {
			return nil, fmt.Errorf("%w: the store's budget of %d bytes leaves nothing for a pack of up to %d", ErrStoreBudget, s.budget, limit)
		}
		r.bytes = room
		if limit > 0 {
			r.bytes = min(room, limit+indexBytes(objects))
		}
		s.reserved += r.bytes
	}
	s.receiving.Add(1)
	return r, nil
}

// release gives the reserved room back.
func (r *reservation) release() {
	if r == nil || r.s == nil {
		return
	}
	s := r.s
	r.s = nil
	s.budgetMu.Lock()
	defer s.budgetMu.Unlock()
	s.receiving.Add(-1)
	if r.bytes != math.MaxInt64 {
		s.reserved -= r.bytes
	}
}

// packBytes is how many bytes of pack the reservation allows (the pack
// reader stops there), math.MaxInt64 without a budget.
func (r *reservation) packBytes() int64 {
	if r.bytes == math.MaxInt64 {
		return r.bytes
	}
	return max(r.bytes-indexBytes(0), 0)
}

// tooLarge is the error of a pack beyond the reservation.
func (r *reservation) tooLarge() error {
	return fmt.Errorf("%w: the pack takes more than the %d bytes the store's budget of %d bytes leaves", ErrStoreBudget, r.bytes, r.budget)
}

// check fails when a pack of packBytes with an index of n objects does
// not fit the reservation.
func (r *reservation) check(packBytes int64, n int) error {
	if r.bytes == math.MaxInt64 {
		return nil
	}
	if need := packBytes + indexBytes(n); need > r.bytes {
		return fmt.Errorf("%w: a pack of %d bytes and its index take %d bytes, the store's budget of %d bytes leaves %d",
			ErrStoreBudget, packBytes, need, r.budget, r.bytes)
	}
	return nil
}

// indexBytes is the size of a version 2 index of n objects (offsets
// beyond 2 GiB aside, 8 bytes more each).
func indexBytes(n int) int64 { return 8 + 256*4 + 28*int64(n) + 40 }

// checkRoom fails when the budget leaves no room: a fetch asks nothing
// of the remote then. Otherwise the pack, of up to limit bytes, is
// bounded by the room as it is received.
func (s *Store) checkRoom(limit int64) error {
	room, err := s.Room()
	if err != nil {
		return err
	}
	if room <= 0 {
		return fmt.Errorf("%w: the store's budget of %d bytes leaves nothing for a pack of up to %d", ErrStoreBudget, s.budgetBytes(), limit)
	}
	return nil
}

// checkFits fails when need bytes do not fit in what the budget leaves
// (a copy from a directory remote, whose size is known before it starts).
func (s *Store) checkFits(need int64) error {
	room, err := s.Room()
	if err != nil {
		return err
	}
	if need > room {
		return fmt.Errorf("%w: %d bytes of objects, the store's budget of %d bytes leaves %d", ErrStoreBudget, need, s.budgetBytes(), max(room, 0))
	}
	return nil
}

func (s *Store) budgetBytes() int64 {
	s.budgetMu.Lock()
	defer s.budgetMu.Unlock()
	return s.budget
}
