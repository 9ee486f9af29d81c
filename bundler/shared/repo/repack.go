package repo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/bundler/shared/atomicfile"
)

// When a collection repacks: the packs left after pruning hold at least
// repackMinDead bytes of entries nothing needs and those are at least a
// quarter of their bytes, or there are more than repackMaxPacks of them
// (git's gc.autoPackLimit). An image arrives as a pack per 4 MiB segment,
// and an update's pack of new chunks keeps the old image's pack alive
// while it shares one chunk: without a repack a store grows by every
// image it ever ran. With it the store stays under 4/3 of what it needs,
// at the cost of writing the needed bytes again about every third update.
const (
	repackMinDead  = 1 << 20
	repackMaxPacks = 50
)

// CollectStats is what [Store.Collect] found and did.
type CollectStats struct {
	// Packs and PackBytes are the store's packs (with their indexes) after
	// pruning, before any repack.
	Packs     int
	PackBytes int64
	// LiveBytes are the bytes of the entries, in those packs, of the
	// objects keep reaches (as stored: compressed, a delta as a delta).
	LiveBytes   int64
	LiveObjects int
	// Repacked says the live objects were written into one new pack, of
	// RepackBytes (with its index), and the old packs removed.
	Repacked    bool
	RepackBytes int64
	// Freed is the bytes removed in all: packs pruned, packs repacked,
	// garbage of interrupted writes.
	Freed int64
}

// repackStep, when set (by tests), is called at each step of a repack;
// a test kills the process there to check that a crash at any step
// leaves a readable store holding everything needed.
var repackStep func(step string)

func step(name string) {
	if repackStep != nil {
		repackStep(name)
	}
}

// Collect keeps the store to what keep reaches (the commits the caller
// needs: its refs). Packs holding nothing of it are removed (as Prune);
// then, when the packs left hold many entries nothing needs or are many
// (see repackMinDead), the objects keep reaches are written into one new
// pack and the old packs removed (Repack). Garbage of interrupted writes
// is removed first. It must not run while anything else uses the store.
//
// It costs a walk of the commits and trees below keep and, for a repack,
// a read and a write of the live bytes: whole entries are copied as they
// are (checked against their CRC-32), deltas are resolved (within the
// store's delta depth) and written whole. The disk holds the old packs
// and the new one until the new one is in place, so a repack needs free
// space for the live bytes.
func (s *Store) Collect(ctx context.Context, keep []plumbing.Hash) (CollectStats, error) {
	return s.collect(ctx, keep, false)
}

// Repack is Collect always repacking (when any pack is left).
func (s *Store) Repack(ctx context.Context, keep []plumbing.Hash) (CollectStats, error) {
	return s.collect(ctx, keep, true)
}

func (s *Store) collect(ctx context.Context, keep []plumbing.Hash, force bool) (CollectStats, error) {
	var st CollectStats
	freed, err := s.RemoveGarbage()
	st.Freed += freed
	if err != nil {
		return st, err
	}
	v, live, err := s.liveSet(keep)
	if err != nil {
		return st, fmt.Errorf("collect %s: %w", s.dir, err)
	}
	freed, err = s.prunePacks(v, live)
	st.Freed += freed
	if err != nil {
		return st, err
	}
	var entryBytes int64
	for i, p := range v.packs {
		if !live.usesPack(i) {
			continue // pruned
		}
		st.Packs++
		st.PackBytes += p.idx.packSize + int64(len(p.idx.data))
		entryBytes += p.idx.packSize - 12 - packTrailerLen
		n, b, err := p.liveEntries(live.bits[i])
		if err != nil {
			return st, fmt.Errorf("collect %s: %w", s.dir, err)
		}
		st.LiveObjects += n
		st.LiveBytes += b
	}
	dead := entryBytes - st.LiveBytes
	if st.Packs == 0 || !force && !(dead >= repackMinDead && 4*dead >= entryBytes || st.Packs > repackMaxPacks) {
		return st, nil
	}
	if err := ctx.Err(); err != nil {
		return st, err
	}
	size, err := s.repack(ctx, v, live, st.LiveObjects)
	if err != nil {
		return st, fmt.Errorf("repack %s: %w", s.dir, err)
	}
	st.Repacked, st.RepackBytes = true, size
	st.Freed += st.PackBytes - size
	return st, nil
}

// liveSet returns the store's view and the set of its objects keep
// reaches.
func (s *Store) liveSet(keep []plumbing.Hash) (*objectView, *objectSet, error) {
	s.rescan()
	v := s.objects()
	live := newObjectSet(v)
	if err := s.walkIDs(keep, func(plumbing.Hash) bool { return false }, func(o Object) { live.add(o.ID) }); err != nil {
		return nil, nil, err
	}
	if s.objects() != v {
		return nil, nil, fmt.Errorf("the store's packs changed during the walk")
	}
	return v, live, nil
}

// byOffset returns the positions of the pack's objects sorted by offset
// (4 bytes an object, kept with the index).
func (p *storedPack) byOffset() ([]uint32, error) {
	if _, err := p.idx.FindHash(-1); err != nil && err != plumbing.ErrObjectNotFound {
		return nil, fmt.Errorf("%s: %w", p.name, err)
	}
	return p.idx.rev, nil
}

// entryEnd is where the entry at k of rev (positions by offset) ends.
func (p *storedPack) entryEnd(rev []uint32, k int) (int64, error) {
	if k+1 < len(rev) {
		return p.idx.offset(int(rev[k+1]))
	}
	return p.idx.packSize - packTrailerLen, nil
}

// liveEntries counts the objects of the pack whose bit is set in live
// and the bytes of their entries.
func (p *storedPack) liveEntries(live []uint64) (int, int64, error) {
	if live == nil {
		return 0, 0, nil
	}
	rev, err := p.byOffset()
	if err != nil {
		return 0, 0, err
	}
	n, size := 0, int64(0)
	for k, pos := range rev {
		if live[pos/64]&(1<<(pos%64)) == 0 {
			continue
		}
		off, err := p.idx.offset(int(pos))
		if err != nil {
			return 0, 0, err
		}
		end, err := p.entryEnd(rev, k)
		if err != nil {
			return 0, 0, err
		}
		n++
		size += end - off
	}
	return n, size, nil
}

// repack writes the objects of live (count of them, all in v's packs)
// into one new pack, installs it (pack, then index), and then removes
// v's other packs (each index, then its pack). A crash before the new
// index is in place leaves the old packs whole (and garbage that
// RemoveGarbage collects); after it, every object is in the new pack,
// whatever old pack is gone. It returns the new pack's bytes.
func (s *Store) repack(ctx context.Context, v *objectView, live *objectSet, count int) (int64, error) {
	packDir := filepath.Join(s.dir, "objects", "pack")
	tmp, err := atomicfile.Create(filepath.Join(packDir, "tmp_pack"), 0o444)
	if err != nil {
		return 0, err
	}
	defer tmp.Abort()
	table, release, err := entryTable(packDir, count)
	if err != nil {
		return 0, err
	}
	defer release()
	pw, err := newPackWriter(tmp.File, uint32(count), DefaultPackLevel, func(e PackEntry) {
		table = append(table, idxEntry{id: e.ID, offset: int64(e.Offset), crc: e.CRC32})
	})
	if err != nil {
		return 0, err
	}
	for i, p := range v.packs {
		if !live.usesPack(i) {
			continue
		}
		if err := p.copyLive(ctx, v, pw, live.bits[i]); err != nil {
			return 0, err
		}
	}
	sum, err := pw.Close()
	if err != nil {
		return 0, err
	}
	if len(table) != count {
		return 0, fmt.Errorf("wrote %d entries, expected %d", len(table), count)
	}
	step("written")
	if err := s.install(tmp, sum, table); err != nil {
		return 0, err
	}
	step("installed")
	newName := "objects/pack/pack-" + sum.String()
	for i, p := range v.packs {
		if !live.usesPack(i) {
			continue // pruned already
		}
		if p.name == newName {
			continue // the same objects in the same order: the same pack
		}
		p.close()
		base := filepath.Join(s.dir, filepath.FromSlash(p.name))
		// The index first: readers find packs by it.
		if err := os.Remove(base + ".idx"); err != nil && !os.IsNotExist(err) {
			return 0, err
		}
		step("index removed")
		if err := os.Remove(base + ".pack"); err != nil && !os.IsNotExist(err) {
			return 0, err
		}
		step("pack removed")
	}
	if err := atomicfile.SyncDir(packDir); err != nil {
		return 0, err
	}
	s.reload()
	var size int64
	for _, ext := range []string{".pack", ".idx"} {
		if fi, err := os.Stat(filepath.Join(s.dir, filepath.FromSlash(newName)+ext)); err == nil {
			size += fi.Size()
		}
	}
	return size, nil
}

// copyLive writes the objects of the pack whose bit is set in live to pw,
// in the pack's order: a whole entry as it is (header and compressed
// content, which must match the CRC-32 the index records), a delta
// resolved (read through the store, whose reader bounds the chain) and
// written whole, since its base may not follow it.
func (p *storedPack) copyLive(ctx context.Context, v *objectView, pw *PackWriter, live []uint64) error {
	rev, err := p.byOffset()
	if err != nil {
		return err
	}
	f, err := openRegular(filepath.Join(v.dir, filepath.FromSlash(p.name)+".pack"))
	if err != nil {
		return err
	}
	defer f.Close()
	var hdr [64]byte
	for k, pos := range rev {
		if live[pos/64]&(1<<(pos%64)) == 0 {
			continue
		}
		if k%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		var id plumbing.Hash
		copy(id[:], p.idx.name(int(pos)))
		off, err := p.idx.offset(int(pos))
		if err != nil {
			return err
		}
		end, err := p.entryEnd(rev, k)
		if err != nil {
			return err
		}
		h, err := readEntryHeaderBuf(f, off, &hdr)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrBadPack, p.name, err)
		}
		if h.typ != packTypeOfsDelta && h.typ != packTypeRefDelta {
			crc, _ := p.idx.FindCRC32(id)
			if err := pw.copyEntry(id, io.NewSectionReader(f, off, end-off), end-off, crc); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			continue
		}
		obj, err := v.object(plumbing.AnyObject, id)
		if err != nil {
			return fmt.Errorf("object %s: %w", id, err)
		}
		r, err := obj.Reader()
		if err != nil {
			return fmt.Errorf("object %s: %w", id, err)
		}
		err = pw.WriteObject(Object{ID: id, Type: obj.Type(), Size: obj.Size()}, r)
		r.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// copyEntry writes a whole (non-delta) entry of id as another pack holds
// it: its n bytes (header and zlib stream) read from r. crc is the
// entry's CRC-32 in that pack's index: bytes that do not match it are
// refused (the pack is damaged), as git does when it reuses an entry. The
// content was checked against id when the pack was received.
func (pw *PackWriter) copyEntry(id plumbing.Hash, r io.Reader, n int64, crc uint32) error {
	if pw.err != nil {
		return pw.err
	}
	if pw.closed || pw.written >= pw.want {
		return pw.fail(fmt.Errorf("object %s beyond the declared count %d", id, pw.want))
	}
	start := pw.off
	pw.crc.Reset()
	got, err := io.CopyBuffer(pw, io.LimitReader(r, n), pw.buf)
	if err != nil {
		return pw.fail(fmt.Errorf("object %s: %w", id, err))
	}
	if got != n {
		return pw.fail(fmt.Errorf("object %s: %w", id, &SizeMismatchError{Declared: n, Got: got}))
	}
	if pw.crc.Sum32() != crc {
		return pw.fail(fmt.Errorf("%w: object %s: entry does not match its CRC-32", ErrBadPack, id))
	}
	pw.add(PackEntry{ID: id, Offset: start, CRC32: crc})
	return nil
}

// RemoveGarbage removes what interrupted writes left in the pack
// directory: temporary packs and indexes, and packs without an index (a
// crash between a pack's rename and its index's, or between a pruned
// index's removal and its pack's). It returns the bytes freed. It must
// not run while anything else writes to the store.
func (s *Store) RemoveGarbage() (int64, error) {
	packDir := filepath.Join(s.dir, "objects", "pack")
	ents, err := os.ReadDir(packDir)
	if err != nil {
		return 0, fmt.Errorf("collect %s: %w", s.dir, err)
	}
	have := map[string]bool{}
	for _, e := range ents {
		have[e.Name()] = true
	}
	var freed int64
	for _, e := range ents {
		name := e.Name()
		garbage := strings.HasPrefix(name, ".tmp_pack.tmp-") || strings.HasPrefix(name, ".tmp_idx.tmp-") ||
			strings.HasPrefix(name, "tmp_entries_") ||
			strings.HasPrefix(name, "pack-") && strings.HasSuffix(name, ".pack") && !have[strings.TrimSuffix(name, ".pack")+".idx"]
		if !garbage {
			continue
		}
		if fi, err := e.Info(); err == nil {
			freed += fi.Size()
		}
		if err := os.Remove(filepath.Join(packDir, name)); err != nil && !os.IsNotExist(err) {
			return freed, fmt.Errorf("collect %s: %w", s.dir, err)
		}
	}
	return freed, nil
}
