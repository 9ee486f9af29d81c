package bundle

import (
	"fmt"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// SegmentBytes bounds the stored size of the chunks one segment of an
// image tag holds (a single larger chunk makes a segment of its own). It is
// part of the format: agents recompute the segments from the signed index,
// so changing it changes every new image tag's commits (older tags are
// then fetched whole, as tags of the single-commit format are).
//
// A cut costs at most one segment and each segment is one request, so the
// size trades what a cut loses against per-request latency: 4 MiB is well
// under the 8 MiB a link that cuts every 8 MiB delivers, and at 2 MB/s a
// connection spends 2 s on a segment against one round trip to ask for it.
const SegmentBytes = 4 << 20

// Segment is one commit of an image tag's chain: a bounded run of the
// image's distinct chunks, in stream order. Its commit's parent is the
// next segment's commit (the last one is a root commit); the tag points at
// the first one ([TagCommit]).
type Segment struct {
	// Index counts from 0.
	Index int
	// Chunks are the segment's chunks; First is the stream rank of the
	// first one.
	Chunks []schema.Chunk
	First  int
	// Stored is the stored size of the chunks (what the segment's pack
	// carries, before git's overhead).
	Stored int64
	// Tree names the chunks (entries "<rank>-<sha256 hex>"), Commit the
	// tree with the next segment's commit as parent.
	Tree, Commit         plumbing.Hash
	TreeData, CommitData []byte
}

// segmentTime is every segment commit's author and committer time: the
// commits are a function of the signed index alone, so an agent knows
// their ids before it fetches any of them.
var segmentTime = time.Unix(0, 0).UTC()

// Segments splits idx's distinct chunks ([NewChunkSet], stream order) into
// the segments of its image tag: a segment takes the next chunk while its
// stored size stays within SegmentBytes, and takes at least one. The
// result is deterministic (see docs/format.md, "Chunk storage").
func Segments(idx *schema.ImageIndex) ([]Segment, error) {
	list := NewChunkSet(idx).List()
	var segs []Segment
	for i := 0; i < len(list) || len(segs) == 0; { // an image without chunks has one empty segment
		s := Segment{Index: len(segs), First: i}
		for i < len(list) && (len(s.Chunks) == 0 || s.Stored+list[i].StoredSize() <= SegmentBytes) {
			s.Chunks = append(s.Chunks, list[i])
			s.Stored += list[i].StoredSize()
			i++
		}
		segs = append(segs, s)
	}
	who := repo.Signature{Name: "pullship", Email: "pullship@localhost", When: segmentTime}
	for k := range segs {
		s := &segs[k]
		entries := make([]repo.TreeEntry, len(s.Chunks))
		for j, c := range s.Chunks {
			entries[j] = repo.TreeEntry{Name: ChunkEntryName(s.First+j, c.SHA256), Mode: filemode.Regular, ID: plumbing.NewHash(c.Blob)}
		}
		var err error
		if s.TreeData, s.Tree, err = repo.EncodeTree(entries); err != nil {
			return nil, fmt.Errorf("image %s: segment %d: %w", idx.Name, k, err)
		}
	}
	// From the last segment (a root commit) to the first, the tag's
	// commit: git packs a commit's tree before its parents', so the whole
	// tag comes in stream order.
	for k := len(segs) - 1; k >= 0; k-- {
		s := &segs[k]
		c := repo.Commit{Tree: s.Tree, Author: who, Committer: who,
			Message: fmt.Sprintf("image %s: segment %d of %d, chunks %d to %d\n", idx.Digest, k+1, len(segs), s.First, s.First+len(s.Chunks)-1)}
		if k+1 < len(segs) {
			c.Parents = []plumbing.Hash{segs[k+1].Commit}
		}
		var err error
		if s.CommitData, s.Commit, err = repo.EncodeCommit(c); err != nil {
			return nil, fmt.Errorf("image %s: segment %d: %w", idx.Name, k, err)
		}
	}
	return segs, nil
}

// TagCommit is the commit an image tag of segs points at: the first
// segment's.
func TagCommit(segs []Segment) plumbing.Hash { return segs[0].Commit }

// SegmentPackLimit bounds the pack that brings one segment's chunks: their
// stored sizes (from the signed index) plus git's overhead.
func SegmentPackLimit(s Segment) int64 { return blobsPackLimit(s.Stored, len(s.Chunks)) }

// ChunkEntryName names a chunk in an image tag's tree: its rank of first
// appearance in the stream, zero-padded so name order is stream order
// (131 072 chunk references at most: 6 digits), then its sha256 hex.
func ChunkEntryName(rank int, sha string) string {
	return fmt.Sprintf("%06d-%s", rank, sha)
}
