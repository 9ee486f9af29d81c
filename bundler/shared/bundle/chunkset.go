package bundle

import "github.com/pullship/pullship/schema"

// ChunkSet is the distinct chunks of an image, in stream order.
type ChunkSet struct{ list []schema.Chunk }

// NewChunkSet collects idx's distinct chunks (by blob id) in stream order,
// the order image.Reader.Chunks delivers them in: for a split layer its
// header stream's chunks, then its contents'.
func NewChunkSet(idx *schema.ImageIndex) *ChunkSet {
	seen := map[string]bool{}
	cs := &ChunkSet{}
	for _, e := range idx.Entries {
		for _, c := range e.StreamChunks() {
			if !seen[c.Blob] {
				seen[c.Blob] = true
				cs.list = append(cs.list, c)
			}
		}
	}
	return cs
}

// List returns the chunks; the slice must not be modified.
func (cs *ChunkSet) List() []schema.Chunk { return cs.list }

// Len is the number of distinct chunks.
func (cs *ChunkSet) Len() int { return len(cs.list) }
