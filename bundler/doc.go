// Package bundler makes and reads pullship releases in git.
//
// A release repository holds one branch, refs/heads/releases, with one
// commit per release (the signed manifest release.toml and its .sig, the
// trust-root chain under root/, every node's rendered files under
// nodes/<node>/ and the image indexes under images/), and one tag per image,
// refs/tags/pullship/images/<hex>, whose tree holds that image's chunks as
// git blobs. docs/format.md specifies it.
//
// [Repository.Release] renders a fleet, chunks its image, signs the manifest
// and pushes it in one compare-and-swap push; [Repository.VerifyHistory]
// checks releases the way an agent does, against a pinned root.
//
// The layout says which side a package serves. Package bundler and
// bundler/{cli,image,render} are the release side: only the pullship
// binary links them. bundler/shared/ holds what both sides read: the git
// layer (bundler/shared/repo), reading and verifying releases and status
// reports (bundler/shared/bundle), rebuilding images from their chunks
// (bundler/shared/chunks) and the scaffolding both command lines share,
// their exit-code table among it (bundler/shared/cliutil). The file formats
// are schema.
package bundler
