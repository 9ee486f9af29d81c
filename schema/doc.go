// Package schema is pullship's release format: the Go types of every file in a
// release repository (the fleet input, the signed manifest, signature files,
// trust roots, image indexes and node status reports), their strict TOML
// decoding and validation, and the signing and threshold verification rules.
//
// The package is pure: it reads bytes and returns values or errors. It never
// touches the network, a git repository or the Docker engine, so that both the
// bundler and the agent (and a second, independent verifier) can share it.
// docs/format.md specifies everything implemented here.
package schema
