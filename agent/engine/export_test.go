package engine

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
)

// Test hooks for the unexported parsers.
var (
	FilterSaveTar = func(w io.Writer, r io.Reader, check func(string) error) (saveFacts, error) {
		return filterSaveTar(w, r, check, nil, nil)
	}
	ReadLoadOutput = func(data []byte, isJSON bool) ([]string, []string, error) {
		out, err := readLoadOutput(bytes.NewReader(data), isJSON)
		return out.IDs, out.Names, err
	}
	CheckDiffIDs     = checkDiffIDs
	ReadImportOutput = func(data []byte) (string, error) { return readImportOutput(bytes.NewReader(data)) }
)

// SetPartBytes sets the size past which a staged load closes a part, until
// the test ends.
func SetPartBytes(t interface{ Cleanup(func()) }, n int64) {
	old := partBytes
	partBytes = n
	t.Cleanup(func() { partBytes = old })
}

// FilterSaveTarStaged runs the filter with a sink that plans as a staged
// load does (with sizes, if not nil) and checks that the layers come in the
// manifest's order; it returns the names of the entries the sink took.
func FilterSaveTarStaged(w io.Writer, r io.Reader, sizes map[string]int64) (saveFacts, []string, error) {
	return filterRecorded(w, r, &recordingSink{sizes: sizes}, nil)
}

// FilterSaveTarHeld is FilterSaveTarStaged with a plan that says the engine
// holds the first held layers, and omit (if not nil) told which.
func FilterSaveTarHeld(w io.Writer, r io.Reader, held int, omit *Omit) (saveFacts, []string, error) {
	return filterRecorded(w, r, &recordingSink{held: held}, omit)
}

// SetHeldHook makes every load call f once it has found that the engine
// holds layers of the image it loads, before any layer streams, until the
// test ends.
func SetHeldHook(t interface{ Cleanup(func()) }, f func(want string, held int)) {
	heldHook = f
	t.Cleanup(func() { heldHook = nil })
}

// ChainIDs is the chain IDs of layers with these diff IDs.
var ChainIDs = chainIDs

func filterRecorded(w io.Writer, r io.Reader, s *recordingSink, omit *Omit) (saveFacts, []string, error) {
	facts, err := filterSaveTar(w, r, nil, s, omit)
	if s.bad != nil {
		panic(s.bad)
	}
	return facts, s.taken, err
}

type recordingSink struct {
	sizes  map[string]int64
	held   int
	layers []string
	taken  []string
	bad    error
}

func (s *recordingSink) plan(config []byte, layers []string) (int, int) {
	s.layers = layers
	return s.held, max(s.held, layersAhead(layers, s.sizes))
}

func (s *recordingSink) take(i int, hdr *tar.Header, r io.Reader) error {
	if s.layers == nil || i != s.held+len(s.taken) || i >= len(s.layers) || s.layers[i] != path.Clean(hdr.Name) {
		s.bad = fmt.Errorf("take(%d) of %q after %q (layers %q)", i, hdr.Name, s.taken, s.layers)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.taken = append(s.taken, path.Clean(hdr.Name))
	return nil
}

func (s *recordingSink) wait() error   { return nil }
func (s *recordingSink) abort(_ error) {}
