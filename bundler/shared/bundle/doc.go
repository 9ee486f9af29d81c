// Package bundle reads a release out of a release repository and verifies
// it: the signed manifest and its trust-root chain ([Read], [Verify]), the
// files and image indexes it pins ([ReadNodeFile], [ReadImageIndex]), an
// image's chunks ([FetchImage], [LiveChunks], [CheckChunks]) and the nodes'
// signed status reports ([CheckReport]). It also names the refs and paths of
// the repository layout (docs/format.md).
//
// It is the read side that both binaries share: the agent imports it to
// verify what it applies, the release side (package bundler) to verify what
// it wrote and what it mirrors. Packages under bundler/shared/ are the only
// part of bundler/ the agent may import, and they import nothing that
// writes a release (no renderer, no template, no diff, no KMS); the
// dependency test in agent/deps_test.go enforces it.
package bundle
